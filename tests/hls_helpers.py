"""Test helpers for HLS: a local HTTP server in a thread, and ladders made with PyAV's
HLS muxer (FFmpeg's `hls`, fMP4 segments and a master playlist)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av

from ingest.synth import pattern_frames


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_dir(root: Path) -> Iterator[str]:
    """Serve `root` over HTTP on 127.0.0.1; yields the base URL (no trailing slash)."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pyav_hls_ladder(
    out_dir: Path,
    rungs: tuple[tuple[str, int, int, int], ...] = (
        ("180p", 320, 180, 300000),
        ("90p", 160, 90, 100000),
    ),
    *,
    seconds: float = 3.0,
    segment_s: int = 1,
    fps: int = 25,
) -> Path:
    """An fMP4 HLS ladder made by FFmpeg's HLS muxer through PyAV; returns master.m3u8.

    `out_dir/<name>/index.m3u8`, `init_<i>.mp4` (EXT-X-MAP) and `seg_NNN.m4s` per rung.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    names = " ".join(f"v:{i},name:{r[0]}" for i, r in enumerate(rungs))
    out = av.open(
        str(out_dir / "%v" / "index.m3u8"),
        "w",
        format="hls",
        options={
            "hls_time": str(segment_s),
            "hls_segment_type": "fmp4",
            "hls_playlist_type": "vod",
            "master_pl_name": "master.m3u8",
            "var_stream_map": names,
            "hls_segment_filename": str(out_dir / "%v" / "seg_%03d.m4s"),
            "hls_fmp4_init_filename": "init.mp4",
        },
    )
    streams = []
    for _, w, h, bitrate in rungs:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt, s.bit_rate = w, h, "yuv420p", bitrate
        s.codec_context.gop_size = fps * segment_s
        s.options = {"sc_threshold": "0", "preset": "veryfast"}
        streams.append(s)
    width, height = rungs[0][1], rungs[0][2]
    for i, rgb in enumerate(pattern_frames("scene", width, height, round(seconds * fps))):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for s in streams:
            scaled = frame.reformat(s.width, s.height)
            scaled.pts, scaled.time_base = i, Fraction(1, fps)
            for packet in s.encode(scaled):
                out.mux(packet)
    for s in streams:
        for packet in s.encode(None):
            out.mux(packet)
    out.close()
    return out_dir / "master.m3u8"
