"""Config models owned by ingest: how segments are decoded and what input is refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class SamplingConfig(StrictModel):
    mode: Literal["keyframes", "uniform", "all"] = Field(
        "uniform",
        description="Which frames are kept as RGB: 'keyframes' decodes only keyframes (fastest; "
        "luma statistics then cover keyframes only), 'uniform' keeps `count` frames evenly "
        "spread over the segment, 'all' keeps every frame.",
    )
    count: int = Field(
        8, ge=1, le=1000, description="Frames kept per segment in 'uniform' and 'keyframes' mode."
    )


class LimitsConfig(StrictModel):
    max_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest segment accepted, in bytes (init included)."
    )
    max_pixels: int = Field(
        4096 * 2304, gt=0, description="Largest width x height accepted (default: 4K DCI)."
    )
    max_decoded_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Most bytes the sampled RGB frames of one decoded segment may take "
        "(width x height x 3 each); checked from the header before decoding. The default "
        "holds 8 frames of 4096x2304. What the daemon holds in memory is about this times "
        "the segments queued after decoding.",
    )
    max_frames: int = Field(3600, gt=0, description="Most video frames accepted in one segment.")
    max_duration_s: float = Field(
        120.0, gt=0, description="Longest segment accepted, in seconds of media time."
    )
    decode_timeout_s: float = Field(
        30.0, gt=0, description="Wall-clock budget for decoding one segment, in seconds."
    )


class DecodeConfig(StrictModel):
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Decoder threads per segment; 0 lets FFmpeg choose. Use 1 when a pool of "
        "decode workers already fills the cores. With bitstream_qp on, decoding is one "
        "thread whatever this says: FFmpeg's frame threads race with the exported quantiser "
        "and its slice threads drop the corrupt marks of concealed frames.",
    )
    skip_nonref: bool = Field(
        True,
        description="Skip decoding non-reference frames that nothing reads (not sampled, not a "
        "quantiser frame): their luma statistics are held from the decoded neighbours. "
        "Decoded pictures are identical; any sign of damage (corrupt or missing packets, "
        "decode errors, concealed frames) decodes the segment again in full.",
    )
    bitstream_qp: bool = Field(
        True,
        description="Read the encoder's quantiser of every frame (FFmpeg's exported encoding "
        "parameters: H.264 macroblock QP, VP9/AV1 q-index); the hybrid score uses it. Codecs "
        "that export nothing (HEVC) give NaN and the score falls back to pixels.",
    )
    hwaccel: Literal["none", "cuda", "auto"] = Field(
        "none",
        description="Hardware decoding through FFmpeg's hwaccel: 'cuda' (NVDEC) on GPU nodes, "
        "'auto' tries cuda then software, 'none' decodes in software. When the device cannot "
        "be opened (no GPU, no driver) decoding falls back to software and "
        "vqmon_decoder_info says what actually runs.",
    )
    hwaccel_device: int | None = Field(
        None, ge=0, description="GPU index for hwaccel (default: the first visible device)."
    )
    dark_pixel_threshold: float = Field(
        0.10,
        ge=0,
        le=1,
        description="A pixel darker than this (0-1 of the luma range) counts as black "
        "(FFmpeg blackdetect's pix_th).",
    )
