"""A tiny Qwen2.5-VL built offline: random weights, a BPE tokenizer trained on the spot,
the PIL image processor (no torchvision here) and a processor without a video processor.

`python -m tests.unit.tiny_vlm serve DIR PORT` runs `transformers serve` on it (the
processor class has to be registered in the serving process too).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or c['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = (
    "<think>The picture is blurry and blocky.</think><answer>3.25</answer> "
    '<answer>{"rating": 4.1}</answer> <answer>{"distortion_class": "blur", '
    '"severity": "moderate"}</answer> Image A Image B Similar noise compression darken '
    "banding freeze black scaling colour 1.5 2.75 global local"
)


def _processor_class() -> Any:
    from transformers import Qwen2_5_VLProcessor

    class TinyQwenProcessor(Qwen2_5_VLProcessor):  # type: ignore[misc]
        """Qwen2.5-VL's processor without the video processor (it needs torchvision)."""

        def __init__(
            self,
            image_processor: Any = None,
            tokenizer: Any = None,
            chat_template: Any = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(
                image_processor, tokenizer, None, chat_template=chat_template, **kwargs
            )

    return TinyQwenProcessor


_REGISTERED: list[Any] = []


def register() -> Any:
    """Register the processor with AutoProcessor (once per process) and return its class."""
    if not _REGISTERED:
        from transformers import AutoProcessor, Qwen2_5_VLConfig

        cls = _processor_class()
        cls.__name__ = "TinyQwenProcessor"
        AutoProcessor.register(Qwen2_5_VLConfig, cls, exist_ok=True)
        _REGISTERED.append(cls)
    return _REGISTERED[0]


def build(path: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS] * 20, trainer)
    ftok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    ids = {t: ftok.convert_tokens_to_ids(t) for t in SPECIAL}
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = register()(
        image_processor=image_processor, tokenizer=ftok, chat_template=CHAT_TEMPLATE
    )
    pad, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(ftok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": pad,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def serve(path: str, port: int) -> None:
    """`transformers serve` on the tiny model, in this process (processor registered)."""
    import torch

    torch.set_num_threads(1)
    register()
    from transformers.cli.transformers import main

    sys.argv = ["transformers", "serve", path, "--host", "127.0.0.1", "--port", str(port)]
    main()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        build(Path(sys.argv[2]))
