"""HTTP endpoints: /metrics (Prometheus text), /healthz (the loop turns), /readyz (serving)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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


class HealthServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, state: HealthState
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
    registry: CollectorRegistry, state: HealthState
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


class HealthGroup(HealthState):
    """Several roles in one process (`--role all`): healthy and ready only when each is.

    Each role's runtime updates its own HealthState; the HTTP server reads this one.
    """

    def __init__(self, parts: dict[str, HealthState]) -> None:
        self.parts = parts
        super().__init__(min((p.stall_after_s for p in parts.values()), default=60.0))

    @property
    def ready(self) -> bool:
        return all(p.ready for p in self.parts.values())

    @ready.setter
    def ready(self, _value: bool) -> None:
        pass  # derived from the parts

    @property
    def reason(self) -> str:
        waiting = [f"{n}: {p.reason}" for n, p in self.parts.items() if not p.ready]
        return "; ".join(waiting) or "ok"

    @reason.setter
    def reason(self, _value: str) -> None:
        pass

    def healthy(self) -> tuple[bool, str]:
        for name, part in self.parts.items():
            ok, why = part.healthy()
            if not ok:
                return False, f"{name}: {why}"
        return True, "ok"
