"""HTTP endpoints: /metrics (Prometheus text), /healthz (the loop turns), /readyz (serving)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

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


class HealthServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, state: HealthView
    ) -> None:
        handler = _handler(registry, state)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
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
    registry: CollectorRegistry, state: HealthView
) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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
