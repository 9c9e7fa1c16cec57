"""Write a live HLS output as segments arrive: TS segments, a media playlist per rendition,
and a master playlist.

Layout: `DIR/master.m3u8`, `DIR/<rendition>/index.m3u8`, `DIR/<rendition>/seg_00000.ts`.
Playlists are replaced atomically (written beside, then renamed), so a reader polling them
never sees half a playlist; `EXT-X-ENDLIST` is added by `close`. With a window
(`list_size` > 0) old segments leave the playlist and are deleted once they have been out
of it for another window (players still fetching them get them).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ingest.cut import Cut

SEGMENT_NAME = "seg_{:05d}.ts"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    width: int
    height: int
    bandwidth: int
    """Peak bit/s for the master playlist's BANDWIDTH."""


@dataclass
class _Media:
    variant: Variant
    entries: list[tuple[int, float]] = field(default_factory=list)
    """(seq, duration) of the segments written, oldest first."""
    target: int = 1
    ended: bool = False


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class HlsWriter:
    def __init__(
        self, directory: Path, variants: list[Variant], *, segment_s: float, list_size: int = 0
    ) -> None:
        if not variants:
            raise ValueError("an HLS output needs at least one variant")
        self.dir = directory
        self.list_size = list_size
        self._media = {v.name: _Media(v, target=max(1, math.ceil(segment_s))) for v in variants}
        directory.mkdir(parents=True, exist_ok=True)
        for v in variants:
            (directory / v.name).mkdir(exist_ok=True)
        _replace(directory / "master.m3u8", self.master_text())

    @property
    def master(self) -> Path:
        return self.dir / "master.m3u8"

    def master_text(self) -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
        for m in sorted(self._media.values(), key=lambda m: -m.variant.bandwidth):
            v = m.variant
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={max(1, v.bandwidth)},RESOLUTION={v.width}x{v.height}"
            )
            lines.append(f"{v.name}/index.m3u8")
        return "\n".join(lines) + "\n"

    def add(self, rendition: str, seq: int, data: bytes, duration_s: float) -> Path:
        """Write one segment and publish it in its rendition's playlist."""
        media = self._media[rendition]
        path = self.dir / rendition / SEGMENT_NAME.format(seq)
        path.write_bytes(data)
        media.entries.append((seq, duration_s))
        # Only ever raised: a player would reload the playlist less often than needed.
        media.target = max(media.target, math.ceil(duration_s - 1e-6))
        if self.list_size > 0 and len(media.entries) > self.list_size:
            gone = media.entries[: -self.list_size]
            media.entries = media.entries[-self.list_size :]
            for old, _ in gone:
                stale = self.dir / rendition / SEGMENT_NAME.format(old - self.list_size)
                stale.unlink(missing_ok=True)
        self._write(media)
        return path

    def put(self, cut: Cut) -> None:
        self.add(cut.rendition, cut.seq, cut.data, cut.duration_s)

    def close(self) -> None:
        """Mark every playlist ended (EXT-X-ENDLIST): readers stop following it."""
        for media in self._media.values():
            media.ended = True
            self._write(media)

    def _write(self, media: _Media) -> None:
        first = media.entries[0][0] if media.entries else 0
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{media.target}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
        ]
        if self.list_size == 0:
            lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
        for seq, duration in media.entries:
            lines.append(f"#EXTINF:{duration:.3f},")
            lines.append(SEGMENT_NAME.format(seq))
        if media.ended:
            lines.append("#EXT-X-ENDLIST")
        _replace(self.dir / media.variant.name / "index.m3u8", "\n".join(lines) + "\n")
