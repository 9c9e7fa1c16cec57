"""The openai backend against real servers on loopback: `transformers serve` serving the
tiny model from its folder, and small stdlib servers that fail, then answer, or never do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import urllib3

from scorers.vlm.config import DiagnoseConfig
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.openai_backend import OpenAIBackend, OpenAIConfig
from scorers.vlm.types import TASKS, Diagnosis, Prompt, VLMError, VLMTimeout
from tests.unit.vlm_samples import request

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tiny_family_dir: Path) -> Iterator[str]:
    """`transformers serve` (transformers[serving]) on a tiny model; yields its /v1 URL."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.tiny_vlm", "serve", str(tiny_family_dir), str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"transformers serve exited {proc.returncode}: {err[-2000:]}")
            try:
                if urllib3.request("GET", f"{base}/models", timeout=2).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("transformers serve did not answer within 90 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_every_task_through_transformers_serve(served: str, tiny_family_dir: Path) -> None:
    cfg = DiagnoseConfig(
        backend=OpenAIConfig(
            base_url=served, model=str(tiny_family_dir), max_new_tokens=8, timeout_s=60
        ),
        tasks=list(TASKS),
        samples=2,  # transformers serve ignores `n`: the backend repeats the request
        local_frames=2,
        mosaic_side=224,
    )
    diagnoser = Diagnoser(cfg)
    reqs = [request(1), request(2)]
    out = diagnoser.diagnose_batch(reqs)
    assert [d.segment_id for d in out] == [r.segment_id for r in reqs]
    for d in out:
        assert d.model == str(tiny_family_dir)
        assert [t.task for t in d.tasks] == list(TASKS)
        for t in d.tasks:
            assert len(t.raw_texts) == 2 and t.latency_s > 0
            if not t.parse_ok:
                assert t.parse_error and t.score_mean is None
        assert Diagnosis.from_json(json.loads(json.dumps(d.to_json()))) == d
    diagnoser.close()


_ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "<answer>3.5</answer>"}}],
    "usage": {"completion_tokens": 5},
}


class _Flaky(BaseHTTPRequestHandler):
    failures_left = 2
    bodies: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self._send(503, b'{"error": "overloaded"}')
        elif body.get("model") == "bad":
            self._send(400, b'{"error": "unknown model"}')
        else:
            self._send(200, json.dumps(_ANSWER).encode())

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    _Flaky.failures_left, _Flaky.bodies = 2, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_retries_after_two_failures(flaky: str) -> None:
    backend = OpenAIBackend(
        OpenAIConfig(base_url=flaky, model="m", retries=3, backoff_s=0.05, timeout_s=10)
    )
    prompt = Prompt("rate", (request().frames[0],), "sys")
    gen = backend.generate([prompt], 1, 1.0)[0]
    assert gen.texts == ("<answer>3.5</answer>",) and gen.new_tokens == 5
    assert backend.attempts == 3
    body = _Flaky.bodies[-1]
    assert body["temperature"] == 0.0 and "n" not in body  # K=1: greedy
    content = body["messages"][1]["content"]  # type: ignore[index]
    assert content[0]["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")
    assert body["messages"][0] == {"role": "system", "content": "sys"}  # type: ignore[index]


def test_gives_up_when_failures_outlast_retries(flaky: str) -> None:
    backend = OpenAIBackend(OpenAIConfig(base_url=flaky, model="m", retries=1, backoff_s=0.01))
    with pytest.raises(VLMError, match="gave up after 2 attempts; last error: HTTP 503"):
        backend.generate([Prompt("rate")], 1, 1.0)


def test_client_error_is_not_retried(flaky: str) -> None:
    _Flaky.failures_left = 0
    backend = OpenAIBackend(OpenAIConfig(base_url=flaky, model="bad", retries=3))
    with pytest.raises(VLMError, match="HTTP 400"):
        backend.generate([Prompt("rate")], 1, 1.0)
    assert backend.attempts == 1


def test_k_samples_with_n_and_concurrency(flaky: str) -> None:
    _Flaky.failures_left = 0
    backend = OpenAIBackend(OpenAIConfig(base_url=flaky, model="m", max_concurrency=2))
    gens = backend.generate([Prompt("a"), Prompt("b"), Prompt("c")], 3, 0.7)
    # the server answers one choice to n=3: the backend asks again for the rest
    assert [len(g.texts) for g in gens] == [3, 3, 3]
    assert {b.get("n") for b in _Flaky.bodies} == {3, 2, None}
    assert all(b["temperature"] == 0.7 for b in _Flaky.bodies)


def test_timeout_when_the_server_never_answers() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are queued by the kernel and never answered
    port = silent.getsockname()[1]
    try:
        backend = OpenAIBackend(
            OpenAIConfig(
                base_url=f"http://127.0.0.1:{port}/v1",
                model="m",
                timeout_s=1.0,
                retries=5,
                backoff_s=0.05,
            )
        )
        t0 = time.monotonic()
        with pytest.raises(VLMTimeout, match=r"no answer within timeout_s=1\.0"):
            backend.generate([Prompt("rate")], 1, 1.0)
        assert time.monotonic() - t0 < 2.5
    finally:
        silent.close()


def test_config_is_strict() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIConfig(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ValueError, match="extra"):
        OpenAIConfig(base_url="http://x/v1", model="m", timout_s=3)  # type: ignore[call-arg]
