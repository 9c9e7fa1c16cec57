"""An MPEG-TS segment rebuilt as the one video stream FFmpeg is to decode, declared so that
FFmpeg makes that stream when it opens the segment and never probes its type.

PyAV passes its options (`max_pixels`, `skip_frame`) to the decoders FFmpeg runs while
probing (avformat_find_stream_info) only through the streams that exist before the probe,
and an option a decoder takes is used up. FFmpeg's MPEG-TS demuxer makes at open only the
streams of the first PMT it reads. Every other PES it meets while probing (a PID no PMT
lists, another programme, a later PMT, a segment whose PAT or PMT is damaged or missing)
became a stream then, without options; and a stream whose type FFmpeg probes (MPEG audio
and AAC types, private data 0x06, a PID listed twice) was opened first as what its type
said and reopened as what its payload looked like, the options spent. Either way a probe
decoder decoded an H.264 picture at whatever size its SPS claimed: 0.7-1.2 GB and
1-4.5 s for a 16000x16000 one (bench/fuzz.py; a review's crafted segments).

`single_programme` hands FFmpeg only what it makes a stream of at open, with no probing:

1. the packets, found as FFmpeg finds them (188 bytes apart; after a lost sync byte, the
   next sync byte);
2. the first PAT section that holds (table id, current, CRC; one that fails its CRC only
   after ten such, as FFmpeg accepts them), and of its programmes (at most MAX_PROGRAMMES)
   the first whose PMT holds and lists a video stream FFmpeg makes of it as one of
   VIDEO_TYPES (the PAT and that PMT opened alone with PyAV: no media, nothing decoded);
3. a PAT naming that programme alone and a PMT listing that one stream alone, with its
   plain ISO stream type and no descriptors (a type FFmpeg maps to one codec and never
   probes), written as fresh packets at the segment's start;
4. then, in their order, that stream's packets and no other: audio, SI tables, null and
   PCR-only packets, other programmes, later tables and stray bytes are dropped (vqmon
   scores one video stream; decode.py takes the first one FFmpeg lists, the same one).

A segment with no such PAT and PMT is refused (TransportProblem): HLS asks each segment to
start with them, or to name an init section (EXT-X-MAP) that holds them, which decode.py
puts before the segment. One whose programme has no video stream FFmpeg makes of its
tables (audio only; or video a probe alone would find, as H.264 under a private or an
audio type), or whose video FFmpeg has no decoder for, keeps its tables alone, so
decode.py says what is missing; one whose video codec has no plain ISO type here
(VIDEO_TYPES) is refused, naming the codec.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator

import av
import av.error
import numpy as np
import numpy.typing as npt

PACKET = 188
SYNC = 0x47
PAT_PID = 0
NULL_PID = 0x1FFF
PAT_TID = 0x00
PMT_TID = 0x02
MAX_SECTION = 1024
"""The longest PSI section (section_length is at most 1021)."""
MAX_TRIES = 32
"""Section starts read per table before giving up: a packager repeats its PAT and PMT
every 100 ms or so, each one whole; a segment of damaged ones is refused, not searched."""
MAX_PROGRAMMES = 4
"""Programmes of the PAT looked at for one with video (HLS segments carry one; each costs
an open of its tables, ~30 ms for a PMT of 200 streams)."""
BAD_CRC_TRUSTED_AFTER = 10
"""FFmpeg takes a section whose CRC fails once ten sections of its PID have failed (a
muxer that writes wrong CRCs); so does this, when no section of the table holds."""
VIDEO_TYPES = {
    "mpeg2video": 0x02,  # FFmpeg decodes MPEG-1 video (type 0x01) with it too
    "mpeg4": 0x10,
    "h264": 0x1B,
    "jpeg2000": 0x21,
    "hevc": 0x24,
    "vvc": 0x33,
    "cavs": 0x42,
    "dirac": 0xD1,
    "avs2": 0xD2,
    "avs3": 0xD4,
    "vc1": 0xEA,
}
"""Video codecs by the ISO stream type FFmpeg maps to that codec alone, with no probing
(mpegts.c ISO_types: request_probe 0; no descriptor follows to change it)."""


class TransportProblem(ValueError):
    """Why an MPEG-TS segment cannot be handed to FFmpeg; the message says what is wrong."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else c << 1
        table.append(c & 0xFFFFFFFF)
    return tuple(table)


_CRC = _crc_table()


def crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A): 0 over a whole PSI section that holds."""
    c = 0xFFFFFFFF
    for b in data:
        c = ((c << 8) & 0xFFFFFFFF) ^ _CRC[(c >> 24) ^ b]
    return c


def packet_starts(data: bytes) -> npt.NDArray[np.int64]:
    """Where each whole packet starts, as FFmpeg's demuxer reads them (see module doc)."""
    n = len(data)
    whole = n // PACKET
    buf = np.frombuffer(data, np.uint8)
    if whole and bool((buf[: whole * PACKET : PACKET] == SYNC).all()):
        return np.arange(whole, dtype=np.int64) * PACKET
    starts: list[int] = []
    pos = 0
    while pos + PACKET <= n:
        if data[pos] == SYNC:
            starts.append(pos)
            pos += PACKET
            continue
        # FFmpeg looks 64 KiB on at a time, and goes on looking past a window without one
        pos = data.find(b"\x47", pos + 1)
        if pos < 0:
            break
    return np.asarray(starts, dtype=np.int64)


def payload_offset(packet: bytes) -> int:
    """Where a packet's payload starts, after its header and adaptation field (PACKET if it
    carries none)."""
    afc = (packet[3] >> 4) & 3
    if not afc & 1:
        return PACKET
    return min(4 + (1 + packet[4] if afc & 2 else 0), PACKET)


def _payload(packet: bytes) -> bytes:
    return packet[payload_offset(packet) :]


def _pids(data: bytes, starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    buf = np.frombuffer(data, np.uint8)
    return ((buf[starts + 1].astype(np.int64) & 0x1F) << 8) | buf[starts + 2]


def _sections(
    data: bytes, starts: npt.NDArray[np.int64], pids: npt.NDArray[np.int64], pid: int, tid: int
) -> Iterator[tuple[bytes, bool]]:
    """The whole, current sections of table `tid` on `pid`, in order, each with whether its
    CRC holds: each starts where a packet's pointer field says and is continued by the
    PID's next packets (up to the next that starts a section)."""
    mine = starts[pids == pid]
    tries = 0
    for i, s in enumerate(mine.tolist()):
        packet = data[s : s + PACKET]
        if not packet[1] & 0x40:
            continue
        tries += 1
        if tries > MAX_TRIES:
            return
        payload = _payload(packet)
        if not payload or 1 + payload[0] + 3 > len(payload):
            continue
        body = payload[1 + payload[0] :]
        if body[0] != tid:
            continue
        total = 3 + (((body[1] & 0x0F) << 8) | body[2])
        if total > MAX_SECTION or total < 12:
            continue
        for nxt in mine[i + 1 : i + 1 + MAX_SECTION // (PACKET - 4) + 1].tolist():
            if len(body) >= total:
                break
            follow = data[nxt : nxt + PACKET]
            if follow[1] & 0x40:
                break
            body += _payload(follow)
        section = body[:total]
        if len(section) == total and section[5] & 1:
            yield section, crc32_mpeg(section) == 0


def _first(sections: Iterator[tuple[bytes, bool]]) -> Iterator[bytes]:
    """The sections FFmpeg would take, in order: those whose CRC holds; those that fail it
    only after BAD_CRC_TRUSTED_AFTER failed ones, and only if none holds."""
    failed: list[bytes] = []
    for section, holds in sections:
        if holds:
            yield section
        else:
            failed.append(section)
    for section in failed[BAD_CRC_TRUSTED_AFTER:]:  # taken as it is, its CRC written anew
        yield section[:-4] + crc32_mpeg(section[:-4]).to_bytes(4, "big")


def _packetise(pid: int, section: bytes) -> bytes:
    """`section` as packets of `pid`: pointer field 0, continuity from 0, stuffed with 0xFF."""
    payload = b"\x00" + section
    out = []
    for cc, at in enumerate(range(0, len(payload), PACKET - 4)):
        chunk = payload[at : at + PACKET - 4]
        start = 0x40 if at == 0 else 0
        header = bytes((SYNC, start | (pid >> 8), pid & 0xFF, 0x10 | (cc & 0x0F)))
        out.append(header + chunk + b"\xff" * (PACKET - 4 - len(chunk)))
    return b"".join(out)


def _section(tid: int, head: bytes, body: bytes) -> bytes:
    """A section of table `tid`: `head` is its five bytes after the length (id, version,
    section numbers), `body` what follows them; the length and the CRC are written."""
    length = len(head) + len(body) + 4
    out = bytes((tid, 0xB0 | (length >> 8), length & 0xFF)) + head + body
    return out + crc32_mpeg(out).to_bytes(4, "big")


@functools.lru_cache(maxsize=256)
def _streams(tables: bytes) -> tuple[tuple[int, str, str], ...]:
    """(PID, media type, codec) of each stream FFmpeg makes of these tables alone (kept for
    the tables seen last: a rendition's segments repeat the same ones)."""
    try:
        with av.open(
            io.BytesIO(tables),
            mode="r",
            format="mpegts",
            container_options={"protocol_whitelist": "none"},
        ) as container:
            return tuple(
                (s.id, s.type, s.codec_context.name if s.codec_context is not None else "")
                for s in container.streams
            )
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise TransportProblem(f"its PAT and PMT cannot be read ({exc})") from exc


def _choose(
    data: bytes, starts: npt.NDArray[np.int64], pids: npt.NDArray[np.int64]
) -> tuple[bytes, int, tuple[tuple[int, str, str], ...], bytes]:
    """(the rewritten PAT, the PMT's PID, the streams FFmpeg makes of it, the PMT) of the
    first programme with a video stream (else the first programme with a PMT)."""
    pat = next(_first(_sections(data, starts, pids, PAT_PID, PAT_TID)), None)
    if pat is None:
        raise TransportProblem(
            "no PAT in the MPEG-TS segment (or none whose CRC holds); each segment should "
            "start with a PAT and a PMT, or its playlist should name an init section "
            "(EXT-X-MAP) holding them"
        )
    # programme 0 names the network PID, not a programme
    programmes = [
        ((pat[at] << 8) | pat[at + 1], ((pat[at + 2] & 0x1F) << 8) | pat[at + 3])
        for at in range(8, len(pat) - 4 - 3, 4)
    ]
    found = None
    for number, pmt_pid in [(n, p) for n, p in programmes if n != 0][:MAX_PROGRAMMES]:
        if pmt_pid in (PAT_PID, NULL_PID):
            continue
        pmts = _first(_sections(data, starts, pids, pmt_pid, PMT_TID))
        pmt = next((s for s in pmts if (s[3] << 8) | s[4] == number), None)
        if pmt is None:
            continue
        entry = bytes((number >> 8, number & 0xFF, 0xE0 | (pmt_pid >> 8), pmt_pid & 0xFF))
        one = _section(PAT_TID, pat[3:8], entry)  # the PAT naming this programme alone
        streams = _streams(_packetise(PAT_PID, one) + _packetise(pmt_pid, pmt))
        if any(kind == "video" for _, kind, _ in streams):
            return one, pmt_pid, streams, pmt
        found = found or (one, pmt_pid, streams, pmt)
    if found is None:
        raise TransportProblem(
            "no PMT of a programme the PAT names (or none whose CRC holds); each segment "
            "should carry its PMT, or its playlist should name an init section (EXT-X-MAP)"
        )
    return found


def single_programme(data: bytes) -> bytes:
    """`data` rebuilt as one programme of one video stream, declared so that FFmpeg makes
    it at open and never probes it (see the module doc); raise TransportProblem if it has
    no PAT and PMT that hold, or video of a codec VIDEO_TYPES does not name."""
    starts = packet_starts(data)
    pids = _pids(data, starts)
    pat, pmt_pid, streams, pmt = _choose(data, starts, pids)
    video = [(pid, codec) for pid, kind, codec in streams if kind == "video"]
    if not video or not video[0][1]:
        # its tables alone: decode.py says the segment has no video, or no decoder for it
        return _packetise(PAT_PID, pat) + _packetise(pmt_pid, pmt)
    pid, codec = video[0]
    if pid in (PAT_PID, pmt_pid, NULL_PID):
        raise TransportProblem(f"its PMT puts the video on PID {pid:#x}, which is reserved")
    if codec not in VIDEO_TYPES:
        raise TransportProblem(
            f"its video (PID {pid:#x}) is {codec}, which vqmon does not decode from MPEG-TS "
            f"(it decodes {', '.join(sorted(VIDEO_TYPES))})"
        )
    es = bytes((VIDEO_TYPES[codec], 0xE0 | (pid >> 8), pid & 0xFF, 0xF0, 0x00))
    head = bytes((pmt[3], pmt[4], 0xC1, 0x00, 0x00))  # programme, version 0, current
    body = bytes((0xE0 | (pid >> 8), pid & 0xFF, 0xF0, 0x00)) + es  # PCR on the video PID
    tables = _packetise(PAT_PID, pat) + _packetise(pmt_pid, _section(PMT_TID, head, body))
    keep = pids == pid
    if len(starts) and int(starts[-1]) == (len(starts) - 1) * PACKET:  # unbroken grid
        grid = np.frombuffer(data, np.uint8)[: len(starts) * PACKET].reshape(-1, PACKET)
        return tables + grid[keep].tobytes()
    return tables + b"".join(data[s : s + PACKET] for s in starts[keep].tolist())
