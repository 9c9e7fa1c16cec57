"""`transformers` backend: a Qwen2.5-VL or Qwen3-VL family model from a local folder,
batched generate.

torch and transformers are imported when the backend is built (the `vlm` extra), never
at module import, so configs validate without them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field

from ingest.config import StrictModel
from scorers.vlm.images import open_jpeg
from scorers.vlm.types import Generation, Prompt, VLMError


class TransformersConfig(StrictModel):
    type: Literal["transformers"] = "transformers"
    model_path: Path = Field(
        description="Local folder with the weights, config, tokenizer and processor "
        "(VisualQuality-R1-7B, Q-Insight, PreResQ-R1, or a Qwen2.5-VL or Qwen3-VL instruct "
        "model: both families load through the same Auto classes). "
        "Nothing is ever downloaded."
    )
    model_id: str | None = Field(
        None, description="Name recorded in every Diagnosis; default: the folder's name."
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="'auto' uses the first CUDA device when there is one."
    )
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="'auto': bfloat16 on CUDA, float32 on CPU."
    )
    batch_size: int = Field(
        4, ge=1, le=256, description="Prompts per generate() call (left-padded batch)."
    )
    max_new_tokens: int = Field(
        256,
        ge=1,
        le=8192,
        description="Bound on each completion (VisualQuality-R1 trains with 256; "
        "non-thinking answers need ~16).",
    )
    max_time_s: float = Field(
        120.0,
        gt=0,
        description="Wall-clock bound on one generate() call (transformers' MaxTimeCriteria): "
        "generation stops there and what was produced is parsed.",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="torch CPU threads (None: torch's default)."
    )


class TransformersBackend:
    """Thread-safe: generate() calls are serialised (one model, one device)."""

    def __init__(self, config: TransformersConfig) -> None:
        self.config = config
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as e:
            raise VLMError(
                f"the transformers backend needs the vlm extra (pip install 'vqmon[vlm]'): {e}"
            ) from e
        path = config.model_path
        if not (path / "config.json").is_file():
            raise VLMError(f"{path}: no config.json; model_path must be a local model folder")
        if config.threads:
            torch.set_num_threads(config.threads)
        cuda = torch.cuda.is_available() and config.device != "cpu"
        if config.device == "cuda" and not torch.cuda.is_available():
            raise VLMError("device 'cuda' asked for, but torch sees no CUDA device")
        self.device = torch.device("cuda" if cuda else "cpu")
        dtype_name = config.dtype if config.dtype != "auto" else ("bfloat16" if cuda else "float32")
        self.dtype = getattr(torch, dtype_name)
        self._torch = torch
        try:
            self.processor: Any = AutoProcessor.from_pretrained(
                path, local_files_only=True, trust_remote_code=False
            )
            self.model: Any = cast(
                Any,
                AutoModelForImageTextToText.from_pretrained(
                    path, dtype=self.dtype, local_files_only=True, trust_remote_code=False
                ),
            )
        except (OSError, ValueError) as e:
            raise VLMError(f"cannot load the model in {path}: {e}") from e
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"
        self._pad_id = self.processor.tokenizer.pad_token_id
        self._lock = threading.Lock()
        self._model_id = config.model_id or path.name

    @classmethod
    def from_config(cls, config: TransformersConfig) -> TransformersBackend:
        return cls(config)

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(
        self, prompts: Sequence[Prompt], samples: int, temperature: float
    ) -> list[Generation]:
        out: list[Generation] = []
        bs = self.config.batch_size
        for start in range(0, len(prompts), bs):
            out.extend(self._generate_batch(prompts[start : start + bs], samples, temperature))
        return out

    def _chat_text(self, prompt: Prompt) -> str:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in prompt.images]
        content.append({"type": "text", "text": prompt.text})
        messages: list[dict[str, Any]] = []
        if prompt.system:
            system = [{"type": "text", "text": prompt.system}]
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": content})
        text: str = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text

    def _generate_batch(
        self, prompts: Sequence[Prompt], samples: int, temperature: float
    ) -> list[Generation]:
        texts = [self._chat_text(p) for p in prompts]
        images = [[open_jpeg(b) for b in p.images] for p in prompts]
        has_images = any(images)
        if has_images and not all(images):
            # the processor takes images for all prompts of a batch or none of them
            return [g for p in prompts for g in self._generate_batch([p], samples, temperature)]
        inputs = self.processor(
            text=texts,
            images=images if has_images else None,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature}
            if samples > 1
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        t0 = time.perf_counter()
        with self._lock, self._torch.inference_mode():
            ids = self.model.generate(
                **inputs,
                max_new_tokens=self.config.max_new_tokens,
                max_time=self.config.max_time_s,
                num_return_sequences=samples,
                pad_token_id=self._pad_id,
                **sampling,
            )
        latency = time.perf_counter() - t0
        new = ids[:, inputs["input_ids"].shape[1] :]
        decoded: list[str] = self.processor.batch_decode(new, skip_special_tokens=True)
        counts = (new != self._pad_id).sum(dim=1).tolist() if self._pad_id is not None else None
        gens = []
        for i in range(len(prompts)):
            rows = slice(i * samples, (i + 1) * samples)
            gens.append(
                Generation(
                    tuple(decoded[rows]),
                    latency,
                    None if counts is None else int(sum(counts[rows])),
                )
            )
        return gens

    def close(self) -> None:
        self.model = None
