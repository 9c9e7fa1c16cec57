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
import ingest.tsguard
from ingest import impair
from ingest.decode import decode
from ingest.hostile import sps_bomb
from ingest.synth import EncodeSettings, clip, pattern_frames
from ingest.tsguard import (
    NULL_PID,
    TransportProblem,
    crc32_mpeg,
    packet_starts,
    single_programme,
)
from ingest.types import DecodeError, LimitExceeded, NoDecoder, NoVideoStream, Segment


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
        single_programme(wrong[1] * 5000 + ts_h264)


def _break_crcs(data: bytes, pids: tuple[int, ...], keep_first: int | None = None) -> bytes:
    """Every section start on `pids` with its CRC's last byte flipped (a muxer writing
    wrong CRCs); with keep_first, only that many such packets are kept of each PID."""
    out, seen = [], dict.fromkeys(pids, 0)
    for p in _packets(data):
        pid = _pid(p)
        if pid in pids and p[1] & 0x40:
            seen[pid] += 1
            if keep_first is not None and seen[pid] > keep_first:
                continue
            end = 5 + 3 + (((p[6] & 0x0F) << 8) | p[7])
            p = p[: end - 1] + bytes((p[end - 1] ^ 0xFF,)) + p[end:]
        out.append(p)
    return b"".join(out)


def test_tables_whose_crc_always_fails_are_taken_after_ten_as_ffmpeg_does(
    ts_h264: bytes,
) -> None:
    pmt = _pmt_pid(ts_h264)
    broken = _break_crcs(ts_h264, (0, pmt))  # 2 s of tables every 100 ms: 20 of each
    assert _video_streams(broken) == [0x100]  # FFmpeg takes them in the end
    assert decode(Segment(broken)).info.width == 320
    with pytest.raises(DecodeError, match="no PAT"):
        decode(Segment(_break_crcs(ts_h264, (0, pmt), keep_first=10)))


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


def _segment_with(ts_h264: bytes, streams: list[tuple[int, int]], extra: list[bytes]) -> bytes:
    """ts_h264 (video on PID 0x100) with its PMT replaced by one listing `streams` and the
    packets `extra` mixed in after its first 20."""
    good = [p for p in _packets(ts_h264) if _pid(p) != 0x1000]
    pmt = _pmt(1, 0x100, streams)
    return b"".join([*good[:1], pmt, *good[1:20], *extra, *good[20:]])


@pytest.mark.parametrize(
    "listed",
    [
        [(0x0F, 0x101)],  # AAC: FFmpeg probes its payload (request_probe 50)
        [(0x04, 0x101)],  # MPEG-2 audio: the same
        [(0x1B, 0x101), (0x06, 0x101)],  # listed twice, then as private data: probed
    ],
    ids=["aac-type", "mpeg-audio-type", "listed-twice"],
)
def test_a_bomb_ffmpeg_would_reprobe_as_h264_never_reaches_it(
    ts_h264: bytes, listed: list[tuple[int, int]]
) -> None:
    """A review's bypass of the first form: a stream listed with a type FFmpeg re-probes
    was opened as what its type said (taking max_pixels) and reopened as H.264 without
    it: 1.24 GB, 4.5 s, and the decode went on. Now only the first video stream is
    declared, with its plain type."""
    bomb = [_relabel(p, 0x101) for p in _packets(sps_bomb(frames=25)) if _pid(p) == 0x100]
    mixed = _segment_with(ts_h264, [(0x1B, 0x100), *listed], bomb)
    rebuilt = single_programme(mixed)
    assert _pids_of(rebuilt) == {0, 0x1000, 0x100}
    pmt = _packets(rebuilt)[1]
    assert pmt[5 + 12 : 5 + 17] == bytes((0x1B, 0xE1, 0x00, 0xF0, 0x00))  # h264, nothing more
    d = decode(Segment(mixed))
    assert (d.info.width, d.info.height, len(d.stats.pts_s)) == (320, 180, 50)


def test_a_bomb_declared_as_the_video_is_refused_by_max_pixels(ts_h264: bytes) -> None:
    """The bomb as the programme's first video, listed as H.264 and again as private data
    (which made FFmpeg probe it): declared once, as H.264, it is opened with max_pixels."""
    bomb = [_relabel(p, 0x101) for p in _packets(sps_bomb(frames=25)) if _pid(p) == 0x100]
    mixed = _segment_with(ts_h264, [(0x1B, 0x101), (0x06, 0x101), (0x1B, 0x100)], bomb)
    with pytest.raises(LimitExceeded, match="16000x16000"):
        decode(Segment(mixed))


def test_a_programme_without_video_is_passed_over_and_audio_only_says_so() -> None:
    frames = list(pattern_frames("scene", 320, 180, 25, seed=4))
    data = _mux(frames, "libx264", "aac", {})
    packets = _packets(data)
    pmt_pid = _pmt_pid(data)
    # a radio programme listed first, on its own PMT PID, carrying the same audio PID
    radio = _pmt(9, 0x101, [(0x0F, 0x101)])
    radio = _relabel(radio, 0x1300)
    pat = _pat([(9, 0x1300), (1, pmt_pid)])
    rest = [p for p in packets if _pid(p) != 0]
    d = decode(Segment(b"".join([pat, radio, *rest])))
    assert (d.info.width, len(d.stats.pts_s)) == (320, 25)
    # audio alone, its PMT listing it alone: the tables alone reach FFmpeg, and the
    # decoder says what is missing
    sound = _pmt(1, 0x101, [(0x0F, 0x101)])
    audio_only = [sound if _pid(p) == pmt_pid else p for p in packets if _pid(p) != 0x100]
    assert _pids_of(single_programme(b"".join(audio_only))) == {0, pmt_pid}
    with pytest.raises(NoVideoStream):
        decode(Segment(b"".join(audio_only)))


def test_tables_after_an_adaptation_field_and_a_pointer_are_read(ts_h264: bytes) -> None:
    """PSI packets may carry an adaptation field, and a section may start past the tail of
    an earlier one (the pointer field says where): every PAT and PMT of the segment written
    so, it still decodes."""

    def reshaped(packet: bytes) -> bytes:
        section = packet[5 : 5 + 3 + (((packet[6] & 0x0F) << 8) | packet[7])]
        adaptation = bytes((7, 0x00)) + b"\xff" * 6  # 8 bytes: length 7, no flags, stuffing
        payload = bytes((2, 0xAB, 0xCD)) + section  # pointer 2: two bytes of an earlier tail
        body = adaptation + payload
        header = bytes((0x47, packet[1], packet[2], 0x30 | (packet[3] & 0x0F)))
        return header + body + b"\xff" * (184 - len(body))

    pmt = _pmt_pid(ts_h264)
    data = b"".join(
        reshaped(p) if _pid(p) in (0, pmt) and p[1] & 0x40 else p for p in _packets(ts_h264)
    )
    assert _video_streams(data) == [0x100]  # FFmpeg reads them so
    assert _video_streams(single_programme(data)) == [0x100]
    assert decode(Segment(data)).info.width == 320


def test_section_starts_that_are_not_are_skipped(ts_h264: bytes) -> None:
    """A packet that starts no section (its PUSI bit clear) is not read as one, and a
    section too short to hold its header is skipped, not indexed past its end."""
    fake = _pat([(1, 0x777)])
    fake = fake[:1] + bytes((fake[1] & ~0x40 & 0xFF,)) + fake[2:]  # PUSI cleared
    empty = bytes((0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xB0, 0x00)) + b"\xff" * 180
    data = b"".join([fake, empty, ts_h264])
    assert _video_streams(single_programme(data)) == [0x100]


def test_reserved_pids_are_no_pmt_and_no_video(ts_h264: bytes) -> None:
    packets = [p for p in _packets(ts_h264) if _pid(p) != 0]
    # a PMT on the null PID (which carries nothing) is passed over for the next programme
    on_null = _relabel(_pmt(1, 0x555, [(0x1B, 0x555)]), NULL_PID)
    pat = _pat([(1, NULL_PID), (2, 0x1000)])
    own = _pmt(2, 0x100, [(0x1B, 0x100)])
    rest = [p for p in packets if _pid(p) != 0x1000]
    assert _video_streams(single_programme(b"".join([pat, on_null, own, *rest]))) == [0x100]
    # video on the null PID is refused
    null_video = _pmt(1, NULL_PID, [(0x1B, NULL_PID)])
    with pytest.raises(TransportProblem, match="reserved"):
        single_programme(b"".join([_pat([(1, 0x1000)]), null_video, *rest]))


def test_video_without_a_decoder_or_a_plain_type_is_named(
    ts_h264: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    rest = [p for p in _packets(ts_h264) if _pid(p) not in (0, 0x1000)]
    # AVS2 (0xd2): FFmpeg makes a video stream it has no decoder for here
    avs2 = b"".join([_pat([(1, 0x1000)]), _pmt(1, 0x100, [(0xD2, 0x100)]), *rest])
    with pytest.raises(NoDecoder):
        decode(Segment(avs2))
    # a codec the table does not name is refused, naming it
    monkeypatch.delitem(ingest.tsguard.VIDEO_TYPES, "h264")
    with pytest.raises(TransportProblem, match=r"video .* is h264"):
        single_programme(ts_h264)


def test_a_hole_longer_than_ffmpegs_resync_window_is_read_past(ts_h264: bytes) -> None:
    """FFmpeg looks for the next sync byte 64 KiB at a time and goes on past a window
    without one: the packets after a 70,000-byte hole are still read."""
    cut = 188 * (len(ts_h264) // 188 // 2)
    holed = ts_h264[:cut] + bytes(70_000) + ts_h264[cut:]
    starts = packet_starts(holed)
    assert len(starts) == len(ts_h264) // 188
    assert int(starts[-1]) == len(holed) - 188 - len(ts_h264) % 188
