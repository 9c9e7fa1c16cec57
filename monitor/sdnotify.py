"""sd_notify(3) over a plain datagram socket: READY, STATUS, WATCHDOG and STOPPING for systemd.

No dependency: the protocol is one datagram of KEY=VALUE lines to $NOTIFY_SOCKET
(a path, or an abstract socket when it starts with '@'). Without the variable every
call is a no-op, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s = int(usec) / 1e6 / 2 if watched else None
        """Half the watchdog timeout systemd set, or None when no watchdog is configured."""
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, **fields: str) -> bool:
        if not self.address:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.address)
                s.sendall(payload)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify(ready="1", **({"status": status} if status else {}))

    def status(self, text: str) -> None:
        self.notify(status=text)

    def stopping(self) -> None:
        self.notify(stopping="1")

    def watchdog(self) -> None:
        """Ping the watchdog at most every half-interval; call it from the main loop."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self.notify(watchdog="1")
