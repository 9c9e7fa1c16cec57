"""HTTP endpoints: /metrics (Prometheus text), /healthz (the loop turns), /readyz (serving)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthView(Protocol):
    """What the HTTP endpoints read."""

    @property
    def ready(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    def healthy(self) -> tuple[bool, str]: ...


class HealthState:
    """Updated by the daemon's main loop; read by the HTTP threads."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.last_tick = time.monotonic()
        self.ready = False
        self.reason = "starting"
        self.problem: str | None = None
        """Set by the runtime's watchdog while a step makes no progress (or outputs wait)."""

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def healthy(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_tick
        if idle > self.stall_after_s:
            return False, f"main loop stalled for {idle:.0f}s"
        problem = self.problem
        if problem is not None:
            return False, problem
        return True, "ok"


class HealthGroup:
    """Several runtimes in one process (`--role all`): healthy and ready only when all are."""

    def __init__(self, states: Sequence[tuple[str, HealthState]]) -> None:
        self.states = list(states)

    @property
    def ready(self) -> bool:
        return all(s.ready for _, s in self.states)

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {s.reason}" for name, s in self.states)

    def healthy(self) -> tuple[bool, str]:
        bad = [(name, s.healthy()) for name, s in self.states]
        problems = [f"{name}: {why}" for name, (ok, why) in bad if not ok]
        return (False, "; ".join(problems)) if problems else (True, "ok")


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` at once; more are closed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # scrapers retry; a flood gets no threads
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """/metrics, /healthz, /readyz on a small thread-per-connection server.

    A connection that sends nothing for `idle_timeout_s` is closed, and at most
    `max_connections` are served at once: idle or slow clients cannot pile up threads.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        state: HealthView,
        *,
        idle_timeout_s: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        handler = _handler(registry, state, idle_timeout_s)
        self.server = _BoundedServer((host, port), handler, max_connections)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="vqmon-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(
    registry: CollectorRegistry, state: HealthView, idle_timeout_s: float
) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = idle_timeout_s  # socket timeout: an idle connection is dropped

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = state.healthy()
                self._reply(200 if ok else 503, why.encode() + b"\n")
            elif path == "/readyz":
                ok = state.ready and state.healthy()[0]
                self._reply(200 if ok else 503, (state.reason + "\n").encode())
            else:
                self._reply(404, b"try /metrics, /healthz or /readyz\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the logs

    return Handler
