"""An MPEG-TS segment rebuilt as the one programme FFmpeg makes streams of when it opens it.

FFmpeg's MPEG-TS demuxer creates the streams of the first PMT it reads while it opens the
segment (avformat_open_input). Every other PES it meets later, while
avformat_find_stream_info probes (a PID no PMT listed, another programme, a later PMT
version, a segment whose PAT or PMT is damaged or missing), becomes a stream then, and
PyAV passes its options (`max_pixels`, `skip_frame`) only to the streams that existed
before the probe. A probe decoder without them decodes an H.264 picture at whatever size
its SPS claims: 0.7-1.2 GB and 1-2.5 s for a 16000x16000 one (bench/fuzz.py).

`single_programme` hands FFmpeg only what it makes streams of at open:

1. the packets, found as FFmpeg finds them (188 bytes apart; after a lost sync byte, the
   next sync byte within RESYNC_BYTES);
2. the first PAT section that holds (table id, current, CRC) and the first such PMT of the
   first programme it names, written as fresh packets at the segment's start (one
   section each, stuffed: nothing else FFmpeg could read in them);
3. the streams FFmpeg itself makes of those two tables (opened alone: no media, nothing
   decoded), and of them the video and audio ones;
4. then, in their order, the packets of those streams' PIDs and no other: SI tables, null
   and PCR-only packets, other programmes, later tables and stray bytes are dropped.

A segment with no such PAT and PMT is refused (TransportProblem): HLS asks each segment to
start with them, or to name an init section (EXT-X-MAP) that holds them, which decode.py
puts before the segment.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import av.error
import numpy as np
import numpy.typing as npt

PACKET = 188
SYNC = 0x47
RESYNC_BYTES = 65536
"""How far FFmpeg looks for the next sync byte after a lost one (its resync_size)."""
PAT_PID = 0
NULL_PID = 0x1FFF
PAT_TID = 0x00
PMT_TID = 0x02
MAX_SECTION = 1024
"""The longest PSI section (section_length is at most 1021)."""
MAX_TRIES = 32
"""Section starts read per table before giving up: a packager repeats its PAT and PMT
every 100 ms or so, each one whole; a segment of damaged ones is refused, not searched."""


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
        pos = data.find(b"\x47", pos + 1, pos + 1 + RESYNC_BYTES)
        if pos < 0:
            break
    return np.asarray(starts, dtype=np.int64)


def _payload(packet: bytes) -> bytes:
    """The packet's payload (after its adaptation field), empty if it carries none."""
    afc = (packet[3] >> 4) & 3
    if not afc & 1:
        return b""
    p = 4
    if afc & 2:
        p += 1 + packet[4]
    return packet[p:] if p < PACKET else b""


def _sections(data: bytes, starts: npt.NDArray[np.int64], pid: int, tid: int) -> Iterator[bytes]:
    """The sections of table `tid` on `pid` that hold, in order: each starting where a
    packet's pointer field says, continued by the PID's next packets."""
    mine = starts[_pids(data, starts) == pid]
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
        # complete, current (not the next version) and its CRC holds
        if len(section) == total and section[5] & 1 and crc32_mpeg(section) == 0:
            yield section


def _pids(data: bytes, starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    buf = np.frombuffer(data, np.uint8)
    return ((buf[starts + 1].astype(np.int64) & 0x1F) << 8) | buf[starts + 2]


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


def _programme(data: bytes, starts: npt.NDArray[np.int64]) -> tuple[int, bytes, bytes]:
    """(PMT PID, PAT section, PMT section): the first programme of the first PAT that
    holds, and the first PMT of it that holds."""
    pat = next(_sections(data, starts, PAT_PID, PAT_TID), None)
    if pat is None:
        raise TransportProblem(
            "no PAT in the MPEG-TS segment (or none whose CRC holds); each segment should "
            "start with a PAT and a PMT, or its playlist should name an init section "
            "(EXT-X-MAP) holding them"
        )
    # the first programme (number 0 names the network PID, not a programme)
    programmes = [
        ((pat[at] << 8) | pat[at + 1], ((pat[at + 2] & 0x1F) << 8) | pat[at + 3])
        for at in range(8, len(pat) - 4, 4)
    ]
    number, pmt_pid = next(((n, p) for n, p in programmes if n != 0), (0, NULL_PID))
    if pmt_pid not in (PAT_PID, NULL_PID):
        for pmt in _sections(data, starts, pmt_pid, PMT_TID):
            if (pmt[3] << 8) | pmt[4] == number:
                return pmt_pid, pat, pmt
    raise TransportProblem(
        "no PMT of the programme the PAT names (or none whose CRC holds); each segment "
        "should carry its PMT, or its playlist should name an init section (EXT-X-MAP)"
    )


def _media_pids(tables: bytes) -> set[int]:
    """The PIDs of the video and audio streams FFmpeg makes of a PAT and PMT alone."""
    try:
        with av.open(
            io.BytesIO(tables),
            mode="r",
            format="mpegts",
            container_options={"protocol_whitelist": "none"},
        ) as container:
            return {s.id for s in container.streams if s.type in ("video", "audio")}
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise TransportProblem(f"its PAT and PMT cannot be read ({exc})") from exc


def single_programme(data: bytes) -> bytes:
    """`data` rebuilt as its first PAT and PMT, then the packets of the streams FFmpeg makes
    of them (see the module doc); raise TransportProblem if it has no such tables."""
    starts = packet_starts(data)
    pmt_pid, pat, pmt = _programme(data, starts)
    # the PAT rewritten to name that programme alone
    number = (pmt[3] << 8) | pmt[4]
    entry = bytes((number >> 8, number & 0xFF, 0xE0 | (pmt_pid >> 8), pmt_pid & 0xFF))
    body = pat[:1] + _length(pat[1:3], 5 + len(entry) + 4) + pat[3:8] + entry
    pat = body + crc32_mpeg(body).to_bytes(4, "big")
    tables = _packetise(PAT_PID, pat) + _packetise(pmt_pid, pmt)
    media = _media_pids(tables) - {PAT_PID, pmt_pid, NULL_PID}
    keep = np.isin(_pids(data, starts), sorted(media))
    if len(starts) and int(starts[-1]) == (len(starts) - 1) * PACKET:  # unbroken grid
        grid = np.frombuffer(data, np.uint8)[: len(starts) * PACKET].reshape(-1, PACKET)
        return tables + grid[keep].tobytes()
    return tables + b"".join(data[s : s + PACKET] for s in starts[keep].tolist())


def _length(field: bytes, length: int) -> bytes:
    """A section header's two length bytes with section_length set, other bits kept."""
    return bytes(((field[0] & 0xF0) | (length >> 8), length & 0xFF))
