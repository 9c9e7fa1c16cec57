"""An ISO-BMFF (MP4, fMP4/CMAF, MOV) box tree checked before FFmpeg's mov demuxer reads it.

FFmpeg's mov demuxer bounds what it allocates for a box by the box's size, and its sample
index by the counts the sample tables claim. Both were found costing gigabytes on
kilobyte inputs (bench/fuzz.py): a nested box claiming more than its parent holds (a
64-bit size read from garbage: 7.7 s and 1265 MB for a 20 KB fragment), and a 64-byte
`trun` claiming 67 million samples (2.4 GB). `bmff_problem` walks the tree first and names
what is wrong, so decode.py refuses such a segment before FFmpeg sees it:

- a box larger than its parent (the last top-level box, and the last box inside it, may
  run past the end: a truncated segment FFmpeg can still read), or nested deeper than
  FFmpeg itself reads (MAX_DEPTH);
- sample tables (`trun`, `stsz`, `stz2`) wherever they sit (FFmpeg reads them under any
  parent it walks): every sample takes at least a byte, so the samples the segment's
  tables claim together may not outnumber its bytes, nor MAX_SAMPLES; a table whose
  per-sample fields are present must hold them. A `stsz` giving one size for all its
  samples (PCM audio, which FFmpeg indexes by chunk) is held to the segment's bytes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

# Boxes whose payload is child boxes that FFmpeg's mov demuxer walks (mov_read_default).
CONTAINERS = {
    b"moov",
    b"trak",
    b"mdia",
    b"minf",
    b"stbl",
    b"moof",
    b"traf",
    b"mvex",
    b"edts",
    b"dinf",
    b"mfra",
    b"udta",
    b"tref",
    b"sinf",
    b"schi",
    b"wave",
    b"ilst",
    b"clip",
    b"matt",
}
TABLES = {b"trun", b"stsz", b"stz2"}
MAX_SAMPLES = 1 << 22
"""Most samples a segment's tables may claim together, whatever its size: ~36 bytes of
FFmpeg's index a sample bounds it near 150 MB (4M samples: 46 hours of 25-fps video)."""
MAX_DEPTH = 10
"""FFmpeg's mov demuxer refuses boxes nested deeper than this; so does the walk."""


@dataclass
class _Walk:
    data: bytes
    samples: int = 0  # claimed by the per-sample tables seen so far

    def tree(self, start: int, end: int, depth: int, cut_ok: bool) -> str | None:
        data, pos = self.data, start
        while pos + 8 <= end:
            size = int.from_bytes(data[pos : pos + 4], "big")
            kind = data[pos + 4 : pos + 8]
            header = 8
            if size == 1:
                if pos + 16 > end:
                    return f"box {kind!r} at byte {pos} has a cut 64-bit size"
                size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
            elif size == 0:
                size = end - pos
            if size < header:
                return f"box {kind!r} at byte {pos} has size {size}"
            cut = pos + size > end
            if cut and not cut_ok:
                return (
                    f"box {kind!r} at byte {pos} claims {size} bytes, its parent holds {end - pos}"
                )
            inside = min(pos + size, end)
            if kind in TABLES:
                problem = self.table(kind, data[pos + header : inside], cut)
                if problem is not None:
                    return f"{problem} (at byte {pos})"
            children = pos + header
            if kind == b"meta":  # FFmpeg reads its children from its 'hdlr' box on
                children = _meta_children(data, children, inside)
            if kind in CONTAINERS or (kind == b"meta" and children >= 0):
                if depth >= MAX_DEPTH:
                    return f"box {kind!r} at byte {pos} is nested deeper than {MAX_DEPTH} boxes"
                problem = self.tree(children, inside, depth + 1, cut_ok=cut)
                if problem is not None:
                    return problem
            if cut:
                return None
            pos += size
        return None

    def table(self, kind: bytes, payload: bytes, cut: bool) -> str | None:
        """What is wrong with a sample table's claimed count, or None. A table the segment
        cuts short is read as FFmpeg reads it: zeros past the end (a count cut after its
        first byte is still a count)."""
        if cut:
            payload = payload + bytes(max(0, 12 - len(payload)))
        if len(payload) < 8:
            return None  # too short to claim anything; FFmpeg refuses it on its own
        flags = int.from_bytes(payload[1:4], "big")
        segment = len(self.data)
        if kind == b"trun":
            count, fixed = int.from_bytes(payload[4:8], "big"), 8
            fixed += 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)  # data offset, first flags
            bits = 32 * sum(bool(flags & bit) for bit in (0x100, 0x200, 0x400, 0x800))
        elif len(payload) < 12:
            return None
        elif kind == b"stsz":  # a size for every sample unless one size is given for all
            count, fixed = int.from_bytes(payload[8:12], "big"), 12
            if int.from_bytes(payload[4:8], "big"):
                if count > segment:
                    return (
                        f"box {kind!r} claims {count} samples of one size, more than the "
                        f"segment's {segment} bytes can hold"
                    )
                return None
            bits = 32
        else:  # stz2: a 4, 8 or 16-bit size for every sample
            count, fixed, bits = int.from_bytes(payload[8:12], "big"), 12, payload[7]
        self.samples += count
        bound = min(segment, MAX_SAMPLES)
        if self.samples > bound:
            return (
                f"box {kind!r} claims {count} samples, {self.samples} with the tables before "
                f"it: more than the {bound} a segment of {segment} bytes can hold"
            )
        if bits and not cut and fixed + (count * bits + 7) // 8 > len(payload):
            return f"box {kind!r} claims {count} samples, its {len(payload)} bytes hold fewer"
        return None


def _meta_children(data: bytes, start: int, end: int) -> int:
    """Where FFmpeg reads a 'meta' box's children: from the box whose type, 'hdlr', it
    finds stepping 4 bytes at a time (a full box in ISO files, a plain one in QuickTime);
    -1 when there is none."""
    for at in range(start, end - 3, 4):
        if data[at : at + 4] == b"hdlr":
            return at - 4 if at - 4 >= start else -1
    return -1


def bmff_problem(data: bytes) -> str | None:
    """What is wrong with an ISO-BMFF segment's box tree (see the module), or None."""
    return _Walk(data).tree(0, len(data), 0, cut_ok=True)
