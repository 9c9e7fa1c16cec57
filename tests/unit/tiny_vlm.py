"""A tiny Qwen2.5-VL or Qwen3-VL built offline: random weights, a BPE tokenizer trained on
the spot, the PIL image processor (no torchvision here) and a processor without a video
processor. The two families differ where their real checkpoints do: Qwen3-VL's 16-pixel
patches, learned position embeddings, DeepStack features merged into the language model's
layers and interleaved multimodal rotary sections.

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


FAMILIES = ("qwen2.5-vl", "qwen3-vl")


def _processor_class(family: str) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen3VLProcessor

    base = Qwen3VLProcessor if family == "qwen3-vl" else Qwen2_5_VLProcessor

    class TinyQwenProcessor(base):  # type: ignore[misc,valid-type]
        """The family's processor without the video processor (it needs torchvision)."""

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

    TinyQwenProcessor.__name__ = (
        "TinyQwen3Processor" if family == "qwen3-vl" else "TinyQwenProcessor"
    )
    return TinyQwenProcessor


_REGISTERED: dict[str, Any] = {}


def register(family: str = "qwen2.5-vl") -> Any:
    """Register both families' processors with AutoProcessor (once per process) and return
    `family`'s class."""
    if not _REGISTERED:
        from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen3VLConfig

        for name, config in zip(FAMILIES, (Qwen2_5_VLConfig, Qwen3VLConfig), strict=True):
            cls = _REGISTERED[name] = _processor_class(name)
            AutoProcessor.register(config, cls, exist_ok=True)
    return _REGISTERED[family]


def _config(family: str, text: dict[str, Any], ids: dict[str, int]) -> Any:
    """The family's model config around the shared tiny text sizes."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2}
    vision |= {"out_hidden_size": 32, "spatial_merge_size": 2, "temporal_patch_size": 2}
    if family == "qwen3-vl":
        rope = {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [2, 3, 3]}
        return Qwen3VLConfig(
            text_config=text
            | {"head_dim": 16, "rope_parameters": rope | {"mrope_interleaved": True}},
            vision_config=vision
            | {"patch_size": 16, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
            tie_word_embeddings=True,
            **tokens,
        )
    return Qwen2_5_VLConfig(
        text_config=text | {"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config=vision | {"patch_size": 14, "window_size": 112, "fullatt_block_indexes": [0]},
        eos_token_id=text["eos_token_id"],
        pad_token_id=text["pad_token_id"],
        **tokens,
    )


def build(path: Path, seed: int = 0, family: str = "qwen2.5-vl") -> Path:
    """Build the tiny `family` model (FAMILIES) and save it with its processor to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AutoModelForImageTextToText,
        PreTrainedTokenizerFast,
        Qwen2VLImageProcessorPil,
    )

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
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
    # a merged token covers 28 (Qwen2.5-VL) or 32 (Qwen3-VL) pixels a side
    side = 32 if family == "qwen3-vl" else 28
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=side // 2, merge_size=2, min_pixels=(2 * side) ** 2, max_pixels=(4 * side) ** 2
    )
    if family == "qwen3-vl":  # Qwen3-VL normalises to [-1, 1]
        image_processor.image_mean = image_processor.image_std = [0.5, 0.5, 0.5]
    processor = register(family)(
        image_processor=image_processor, tokenizer=ftok, chat_template=CHAT_TEMPLATE
    )
    pad, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    text = {
        "vocab_size": len(ftok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "bos_token_id": pad,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "tie_word_embeddings": True,
    }
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(_config(family, text, ids))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def serve(path: str, port: int) -> None:
    """`transformers serve` on the tiny model, in this process (processor registered)."""
    import torch

    torch.set_num_threads(1)
    register()  # both families
    from transformers.cli.transformers import main

    sys.argv = ["transformers", "serve", path, "--host", "127.0.0.1", "--port", str(port)]
    main()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:  # build DIR [FAMILY]
        build(Path(sys.argv[2]), family=sys.argv[3] if len(sys.argv) > 3 else FAMILIES[0])
