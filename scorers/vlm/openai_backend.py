"""`openai` backend: any OpenAI-compatible /v1/chat/completions server (vLLM, SGLang,
`transformers serve`), images inline as data URLs.

One urllib3 pool (connections reused, at most `max_concurrency` of them), a semaphore
bounding requests in flight across threads, a total deadline per request with retries
(exponential backoff with jitter) on connection errors, timeouts, 429 and 5xx.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import urllib3
from pydantic import Field, field_validator

from ingest.config import StrictModel
from scorers.vlm.types import Generation, Prompt, VLMError, VLMTimeout

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class OpenAIConfig(StrictModel):
    type: Literal["openai"] = "openai"
    base_url: str = Field(
        description="The server's OpenAI API root, e.g. http://127.0.0.1:8000/v1 "
        "(requests go to <base_url>/chat/completions)."
    )
    model: str = Field(description="Model name the server knows the weights by.")
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable holding the API key (sent as a Bearer "
        "token); keys never go in the config file.",
    )
    timeout_s: float = Field(
        60.0, gt=0, description="Total time for one request, retries and back-off included."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Time to open a connection.")
    retries: int = Field(
        3, ge=0, le=20, description="Retries after a connection error, timeout, 429 or 5xx."
    )
    backoff_s: float = Field(
        0.5, ge=0, description="First retry delay; doubles each retry, with jitter (x0.5-1)."
    )
    backoff_max_s: float = Field(8.0, ge=0, description="Longest delay between retries.")
    max_concurrency: int = Field(
        4, ge=1, le=1024, description="Requests in flight at once (also the connection pool)."
    )
    max_new_tokens: int = Field(256, ge=1, le=8192, description="max_tokens of each request.")
    samples_via: Literal["n", "repeat"] = Field(
        "n",
        description="K samples as one request with `n` (vLLM, SGLang), or K requests. A server "
        "that returns fewer choices than `n` gets repeat requests for the rest.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url {v!r} must start with http:// or https://")
        return v.rstrip("/")


class OpenAIBackend:
    def __init__(
        self,
        config: OpenAIConfig,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._url = f"{config.base_url}/chat/completions"
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=config.max_concurrency, block=True, retries=False
        )
        self._slots = threading.Semaphore(config.max_concurrency)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise VLMError(f"environment variable {config.api_key_env} (api_key_env) is unset")
            self._headers["Authorization"] = f"Bearer {key}"
        self.attempts = 0
        """HTTP attempts made (for tests and metrics)."""

    @classmethod
    def from_config(cls, config: OpenAIConfig) -> OpenAIBackend:
        return cls(config)

    @property
    def model_id(self) -> str:
        return self.config.model

    def generate(
        self, prompts: Sequence[Prompt], samples: int, temperature: float
    ) -> list[Generation]:
        if len(prompts) <= 1:
            return [self._one(p, samples, temperature) for p in prompts]
        workers = min(len(prompts), self.config.max_concurrency)
        with ThreadPoolExecutor(workers, thread_name_prefix="vlm-http") as ex:
            return list(ex.map(lambda p: self._one(p, samples, temperature), prompts))

    def _one(self, prompt: Prompt, samples: int, temperature: float) -> Generation:
        t0 = time.perf_counter()
        texts: list[str] = []
        tokens: int | None = 0
        while len(texts) < samples:
            n = samples - len(texts) if self.config.samples_via == "n" else 1
            body = self._body(prompt, n, temperature if samples > 1 else 0.0)
            answer = self._post(body)
            choices = answer.get("choices") or []
            if not choices:
                raise VLMError(f"{self._url}: answer without choices: {str(answer)[:200]}")
            for c in choices[:n]:
                content = (c.get("message") or {}).get("content")
                texts.append(content if isinstance(content, str) else "")
            used = (answer.get("usage") or {}).get("completion_tokens")
            tokens = None if tokens is None or not isinstance(used, int) else tokens + used
        return Generation(tuple(texts), time.perf_counter() - t0, tokens)

    def _body(self, prompt: Prompt, n: int, temperature: float) -> dict[str, Any]:
        content: list[dict[str, Any]] = [
            {
                "type": "image_url",
                "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b).decode()},
            }
            for b in prompt.images
        ]
        content.append({"type": "text", "text": prompt.text})
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": self.config.max_new_tokens,
            "temperature": temperature,
            "stream": False,
        }
        if n > 1:
            body["n"] = n
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries under one total deadline; returns the decoded JSON answer."""
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout_s
        data = json.dumps(body).encode()
        last = "no attempt"
        for attempt in range(cfg.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timeout = urllib3.Timeout(connect=min(cfg.connect_timeout_s, left), read=left)
            with self._slots:
                self.attempts += 1
                try:
                    r = self._pool.request(
                        "POST", self._url, body=data, headers=self._headers, timeout=timeout
                    )
                except urllib3.exceptions.HTTPError as e:
                    last = f"{type(e).__name__}: {e}"
                    r = None
            if r is not None:
                if r.status == 200:
                    try:
                        answer: dict[str, Any] = json.loads(r.data)
                    except ValueError as e:
                        raise VLMError(f"{self._url}: answer is not JSON: {e}") from e
                    return answer
                last = f"HTTP {r.status}: {r.data[:200].decode(errors='replace')}"
                if r.status not in _RETRY_STATUS:
                    raise VLMError(f"{self._url}: {last}")
            if attempt < cfg.retries:
                delay = min(cfg.backoff_max_s, cfg.backoff_s * 2**attempt)
                delay *= 0.5 + 0.5 * self._rng.random()
                self._sleep(max(0.0, min(delay, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            raise VLMTimeout(
                f"{self._url}: no answer within timeout_s={cfg.timeout_s} "
                f"({self.attempts} attempts so far); last error: {last}"
            )
        raise VLMError(f"{self._url}: gave up after {cfg.retries + 1} attempts; last error: {last}")

    def close(self) -> None:
        self._pool.clear()
