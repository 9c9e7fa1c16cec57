"""ingest/tsguard.py: an MPEG-TS segment handed to FFmpeg as the one programme its first
PAT and PMT declare, so every stream FFmpeg probes exists before the probe and gets
max_pixels (the gap: a damaged PAT/PMT, or PES on a PID no PMT lists, was probed without
it and decoded at the size its SPS claims)."""

from __future__ import annotations

import io
import random

import av
import numpy as np
import pytest

import ingest.decode
from ingest import impair
from ingest.decode import decode
from ingest.hostile import sps_bomb
from ingest.synth import EncodeSettings, clip, pattern_frames
from ingest.tsguard import TransportProblem, crc32_mpeg, packet_starts, single_programme
from ingest.types import DecodeError, Segment


def _packets(data: bytes) -> list[bytes]:
    return [data[i : i + 188] for i in range(0, len(data) - 187, 188)]


def _pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def _relabel(packet: bytes, pid: int) -> bytes:
    return packet[:1] + bytes(((packet[1] & 0xE0) | (pid >> 8), pid & 0xFF)) + packet[3:]


def _pmt_pid(data: bytes) -> int:
    pat = next(p for p in _packets(data) if _pid(p) == 0)
    section = pat[5:]
    return ((section[10] & 0x1F) << 8) | section[11]


def _pids_of(data: bytes) -> set[int]:
    return {_pid(p) for p in _packets(data)}


def _video_streams(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        return [s.id for s in c.streams.video]


def _summary(data: bytes) -> tuple[object, ...]:
    d = decode(Segment(data))
    rgb = b"".join(f.rgb.tobytes() for f in d.frames)
    return (d.info.width, d.info.height, len(d.stats.pts_s), d.corrupt_frames, hash(rgb))


def _mux(frames: list[np.ndarray], codec: str, audio: str | None, options: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts", options=options) as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height = frames[0].shape[1], frames[0].shape[0]
        video.pix_fmt = "yuv420p"
        if codec == "libx265":
            video.options = {"x265-params": "log-level=error"}
        sound = out.add_stream(audio, rate=48000) if audio else None
        if sound is not None:
            sound.layout = "stereo"
        samples = 0
        for i, rgb in enumerate(frames):
            for p in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
            while sound is not None and samples < (i + 1) * 48000 / 25:
                size = sound.codec_context.frame_size or 1024
                fmt = sound.codec_context.format
                dtype = np.int16 if fmt.name.startswith("s16") else np.float32
                shape = (2, size) if fmt.is_planar else (1, 2 * size)
                frame = av.AudioFrame.from_ndarray(np.zeros(shape, dtype), fmt.name, "stereo")
                frame.sample_rate, frame.pts = 48000, samples
                samples += size
                for p in sound.encode(frame):
                    out.mux(p)
        for p in video.encode(None):
            out.mux(p)
        for p in sound.encode(None) if sound is not None else ():
            out.mux(p)
    return buf.getvalue()


def test_crc_is_crc32_mpeg2() -> None:
    assert crc32_mpeg(b"123456789") == 0x0376E6E7  # the catalogue's check value


LEGIT = {
    "h264 + aac": ("libx264", "aac", {}),
    "hevc": ("libx265", None, {}),
    "mpeg2 + mp2": ("mpeg2video", "mp2", {}),
    "other pids, tables often": (
        "libx264",
        "ac3",
        {
            "mpegts_service_id": "77",
            "mpegts_pmt_start_pid": "0x1ff",
            "mpegts_start_pid": "0x1ab",
            "pat_period": "0.05",
            "sdt_period": "0.05",
            "mpegts_flags": "resend_headers+pat_pmt_at_frames+system_b",
        },
    ),
}


@pytest.mark.parametrize("name", LEGIT)
def test_legitimate_segments_decode_exactly_as_before(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuilt segment decodes to the same pictures, timestamps and damage as the
    original, for several codecs, audio, PIDs and table repetitions, and for transport
    damage (lost, overwritten and slipped packets, truncation)."""
    codec, audio, options = LEGIT[name]
    data = _mux(list(pattern_frames("scene", 320, 180, 50, seed=3)), codec, audio, options)
    rng = random.Random(name)
    slipped = bytearray(data)
    slipped[7001:7001] = bytes(rng.randrange(256) for _ in range(100))  # grid broken
    variants = [
        data,
        impair.corrupt_packets(data, 0.1, seed=1),
        impair.corrupt_packets(data, 0.1, seed=2, mode="drop"),
        data[: len(data) // 2 + 77],
        bytes(slipped),
    ]
    guarded = [_summary(v) for v in variants]
    monkeypatch.setattr(ingest.decode, "single_programme", lambda d: d)
    assert guarded == [_summary(v) for v in variants]
    assert guarded[0][:4] == (320, 180, 50, 0)


def test_a_bomb_whose_pat_and_pmt_are_lost_is_refused_before_ffmpeg_probes_it() -> None:
    """The gap this closes: with no PAT/PMT, FFmpeg made the stream while probing, with no
    max_pixels, and decoded a 16000x16000 picture (0.7-1.2 GB) before decode.py refused it."""
    bomb = sps_bomb(frames=25)
    pmt = _pmt_pid(bomb)
    stripped = b"".join(p for p in _packets(bomb) if _pid(p) not in (0, pmt))
    with pytest.raises(DecodeError, match="no PAT") as info:
        decode(Segment(stripped, source="bomb"))
    assert "EXT-X-MAP" in str(info.value)


def test_pes_on_a_pid_no_pmt_lists_is_dropped(ts_h264: bytes) -> None:
    """A bomb's video relabelled to a PID the PMT does not list, mixed into a good segment:
    FFmpeg would make a stream of it while probing (without max_pixels); it never sees it."""
    bomb = [_relabel(p, 0x1234) for p in _packets(sps_bomb(frames=25)) if _pid(p) == 0x100]
    good = _packets(ts_h264)
    mixed = b"".join(good[:20] + bomb + good[20:])
    assert 0x1234 in _video_streams(mixed)  # FFmpeg alone makes a stream of it
    rebuilt = single_programme(mixed)
    assert 0x1234 not in _pids_of(rebuilt)
    assert _video_streams(rebuilt) == [0x100]
    d = decode(Segment(mixed))
    assert (d.info.width, d.info.height) == (320, 180)


def _section_packet(pid: int, body: bytes, *, crc_ok: bool = True) -> bytes:
    """A section as one stuffed packet: `body` is the table id, then the section from its
    id field on (the length and the CRC are added)."""
    length = len(body) - 1 + 4
    section = bytes((body[0], 0xB0 | (length >> 8), length & 0xFF)) + body[1:]
    crc = crc32_mpeg(section) ^ (0 if crc_ok else 1)
    payload = b"\x00" + section + crc.to_bytes(4, "big")
    header = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10))
    return header + payload + b"\xff" * (184 - len(payload))


def _pat(
    programmes: list[tuple[int, int]], *, current: bool = True, crc_ok: bool = True, tid: int = 0
) -> bytes:
    entries = b"".join(bytes((n >> 8, n & 0xFF, 0xE0 | (p >> 8), p & 0xFF)) for n, p in programmes)
    head = bytes((tid, 0x00, 0x01, 0xC0 | current, 0, 0))
    return _section_packet(0, head + entries, crc_ok=crc_ok)


def _pmt(number: int, pcr: int, streams: list[tuple[int, int]]) -> bytes:
    entries = b"".join(bytes((t, 0xE0 | (p >> 8), p & 0xFF, 0xF0, 0x00)) for t, p in streams)
    head = bytes((0x02, number >> 8, number & 0xFF, 0xC1, 0, 0, 0xE0 | (pcr >> 8), pcr & 0xFF))
    return _section_packet(0x1000, head + bytes((0xF0, 0)) + entries)


def test_another_programme_is_dropped_and_the_pat_names_one(ts_h264: bytes) -> None:
    """Only the first programme of the PAT is kept; the rebuilt PAT names it alone."""
    other = clip("scene", settings=EncodeSettings(codec="libx264", container="mpegts"), seed=9)
    moved = [
        _relabel(p, {0x1000: 0x1100, 0x100: 0x300}[_pid(p)])
        for p in _packets(other)
        if _pid(p) in (0x1000, 0x100)  # its PMT and video, moved to other PIDs
    ]
    pat = _pat([(1, 0x1000), (2, 0x1100)])
    mixed = b"".join([pat] + [p for p in _packets(ts_h264) if _pid(p) != 0] + moved)
    assert sorted(_video_streams(mixed)) == [0x100, 0x300]  # FFmpeg alone reads both
    rebuilt = single_programme(mixed)
    assert _pids_of(rebuilt) == {0, 0x1000, 0x100}
    first = _packets(rebuilt)[0]
    section = first[5 : 5 + 3 + (((first[6] & 0x0F) << 8) | first[7])]
    assert crc32_mpeg(section) == 0
    assert section[8:12] == bytes((0x00, 0x01, 0xF0, 0x00))  # programme 1 on PID 0x1000 ...
    assert len(section) == 3 + 5 + 4 + 4  # ... alone
    assert _packets(rebuilt)[1][:3] == bytes((0x47, 0x50, 0x00))  # the PMT, next


def test_pes_on_a_pid_the_pmt_lists_as_data_is_dropped(ts_h264: bytes) -> None:
    """A PID the PMT lists as private sections is a data stream to FFmpeg, with no PES
    filter: PES on it became another stream while probing. Only video and audio PIDs are
    kept."""
    bomb = [_relabel(p, 0x1234) for p in _packets(sps_bomb(frames=25)) if _pid(p) == 0x100]
    pmt = _pmt(1, 0x100, [(0x1B, 0x100), (0x05, 0x1234)])
    good = [p for p in _packets(ts_h264) if _pid(p) != 0x1000]
    mixed = b"".join([*good[:1], pmt, *good[1:20], *bomb, *good[20:]])
    assert 0x1234 in _video_streams(mixed)  # FFmpeg alone makes a video stream of it
    rebuilt = single_programme(mixed)
    assert 0x1234 not in _pids_of(rebuilt)
    assert _video_streams(rebuilt) == [0x100]


def test_tables_that_do_not_hold_are_skipped_or_refused(ts_h264: bytes) -> None:
    packets = _packets(ts_h264)
    pmt = _pmt_pid(ts_h264)
    # PATs naming a PMT that does not exist: one whose CRC is wrong, one that is the next
    # version (not current), one of another table; the segment's own PAT after them is used
    wrong = [
        _pat([(1, 0x777)], crc_ok=False),
        _pat([(1, 0x777)], current=False),
        _pat([(1, 0x777)], tid=0x02),
    ]
    assert _video_streams(single_programme(b"".join(wrong + packets))) == [0x100]
    # the network PID's entry (programme 0) is no programme; a PMT of another programme
    # on the PMT's PID is not this programme's
    pat = _pat([(0, 0x10), (1, pmt)])
    stray = _pmt(5, 0x555, [(0x1B, 0x555)])
    assert _video_streams(single_programme(b"".join([pat, stray, *packets]))) == [0x100]
    # every PMT missing: refused, saying which table
    no_pmt = [p for p in packets if _pid(p) != pmt]
    with pytest.raises(TransportProblem, match="no PMT"):
        single_programme(b"".join(no_pmt))
    # many damaged PATs are not searched without end
    with pytest.raises(TransportProblem, match="no PAT"):
        single_programme(wrong[0] * 5000 + ts_h264)


def test_a_pmt_longer_than_one_packet_is_read_whole(ts_h264: bytes) -> None:
    packets = _packets(ts_h264)
    pmt_pid = _pmt_pid(ts_h264)
    old = next(p for p in packets if _pid(p) == pmt_pid)
    section = old[5 : 5 + 3 + (((old[6] & 0x0F) << 8) | old[7])][:-4]
    info = bytes((0x05, 250)) + bytes(250)  # a 252-byte programme descriptor
    grown = bytearray(section[:10] + info + section[12:])
    grown[10:10] = bytes((0xF0 | (len(info) >> 8), len(info) & 0xFF))
    length = len(grown) + 4 - 3
    grown[1:3] = bytes(((grown[1] & 0xF0) | (length >> 8), length & 0xFF))
    long = bytes(grown) + crc32_mpeg(bytes(grown)).to_bytes(4, "big")
    payload = b"\x00" + long
    first = old[:4] + payload[:184]
    rest = payload[184:]
    second = bytes((0x47, pmt_pid >> 8, pmt_pid & 0xFF, 0x11)) + rest + b"\xff" * (184 - len(rest))
    others = [p for p in packets if _pid(p) != pmt_pid]
    data = b"".join([*others[:1], first, second, *others[1:]])
    assert _video_streams(single_programme(data)) == [0x100]
    assert decode(Segment(data)).info.width == 320


def test_an_init_section_holding_the_tables_is_put_first(ts_h264: bytes) -> None:
    """A TS rendition whose playlist names an init section (EXT-X-MAP) with its PAT/PMT."""
    packets = _packets(ts_h264)
    pmt = _pmt_pid(ts_h264)
    tables = b"".join(p for p in packets if _pid(p) in (0, pmt))
    media = b"".join(p for p in packets if _pid(p) not in (0, pmt))
    with pytest.raises(DecodeError, match="no PAT"):
        decode(Segment(media))
    d = decode(Segment(media, init=tables))
    assert (d.info.width, d.info.height, len(d.stats.pts_s)) == (320, 180, 50)


def test_resync_after_a_lost_sync_byte_finds_the_next_packet(ts_h264: bytes) -> None:
    slipped = ts_h264[:1000] + b"\x00" * 13 + ts_h264[1000:]
    starts = packet_starts(slipped).tolist()
    assert starts[:5] == [0, 188, 376, 564, 752]
    # the packet cut by the slip is lost, as FFmpeg loses it; the grid resumes after it
    assert 1128 + 13 in starts and all((s - 1141) % 188 == 0 for s in starts[6:])
    assert all(slipped[s] == 0x47 for s in starts)
    # one stray byte: the packet after it starts one byte later
    stray = ts_h264[:1128] + b"\x00" + ts_h264[1128:]
    assert packet_starts(stray).tolist()[5:8] == [940, 1129, 1317]
