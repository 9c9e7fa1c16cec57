"""The screen step's own bookkeeping, with an in-memory pool in place of the workers."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from ingest.contract import SegmentJob
from ingest.types import Segment, StreamInfo
from monitor import screen
from monitor.boundary import Edge
from monitor.clients import Record
from monitor.escalation import Recent
from monitor.runtime import Context, Message
from monitor.screen import AdaptivePlanner, ScreenStep
from monitor.sections import ScreeningConfig
from monitor.workers import DecodeSummary, Result, Screened, ScreenJob, WorkerPool
from scorers.types import Verdict


class Pool:
    """Takes jobs; `finish` hands back a result for each as if a worker screened it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, ScreenJob]] = []
        self.done: list[Result] = []

    def free_slots(self) -> int:
        return 8

    def submit(self, job_id: int, job: ScreenJob) -> None:
        self.jobs.append((job_id, job))

    def poll(self, timeout_s: float) -> list[Result]:
        out, self.done = self.done, []
        return out

    def finish(self, job_id: int, seg: Segment, size: str = "", errors: int = 0) -> None:
        v = Verdict(seg.key, seg.stream, seg.rendition, seg.seq, 4.0, 4.0, (), (), ("x@1",))
        w, h = (int(x) for x in (size or seg.rendition).split("x"))
        info = StreamInfo("h264", None, w, h, 25.0, "yuv420p", 8, None, 2.0, 1e5, 50, 1, "mpegts")
        self.done.append(Screened(job_id, v, info, DecodeSummary(errors, 0, 0.1), 0.0))


class Sink:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def submit(self, message: Message[Any]) -> None:
        self.got.append(message)

    def poll(self) -> None:
        pass


def _step(pool: Pool, sink: Sink, **kw: Any) -> ScreenStep:
    return ScreenStep(
        cast(Context, None),
        cast(WorkerPool, pool),
        AdaptivePlanner(ScreeningConfig()),
        cast(Any, sink),
        intake=16,
        **kw,
    )


def test_segments_without_a_display_header_get_the_streams_top_rung_once_screened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(screen.time, "monotonic", lambda: clock[0])
    pool, sink = Pool(), Sink()
    step = _step(pool, sink)

    def offer(rendition: str, seq: int, display: tuple[int, int] | None = None) -> Segment:
        seg = Segment(b"", "news", rendition, seq, display=display)
        step.submit(Message(Record("seg", 0, seq, None, b""), SegmentJob(seg)))
        step.poll(0.0)
        return seg

    first = offer("320x180", 0)
    assert pool.jobs[-1][1].job.segment.display is None  # nothing known: the worker decides
    pool.finish(pool.jobs[-1][0], first)
    top = offer("640x360", 0)
    pool.finish(pool.jobs[-1][0], top)
    step.poll(0.0)
    offer("320x180", 1)
    # every worker now judges the low rung at the top rung's size, whatever it has seen
    assert pool.jobs[-1][1].job.segment.display == (640, 360)
    offer("320x180", 2, display=(1280, 720))  # a header says otherwise: it wins
    assert pool.jobs[-1][1].job.segment.display == (1280, 720)
    assert len(sink.got) == 2
    for job_id, job in pool.jobs[-2:]:  # screened as they were sent
        pool.finish(job_id, job.job.segment)
    step.poll(0.0)
    assert len(sink.got) == 4
    # a damaged segment (an ad at 4K that decoded with errors) teaches nothing
    damaged = offer("640x360", 1)
    pool.finish(pool.jobs[-1][0], damaged, size="3840x2160", errors=40)
    step.poll(0.0)
    assert step.display_of("news") == (640, 360)
    # the top rung leaves the ladder: after DISPLAY_WINDOW_S the rest set the size
    clock[0] += screen.DISPLAY_WINDOW_S - 1
    low = offer("320x180", 3)
    pool.finish(pool.jobs[-1][0], low)
    step.poll(0.0)
    assert step.display_of("news") == (640, 360)
    clock[0] += 2
    assert step.display_of("news") == (320, 180)


def test_a_renditions_settled_hint_is_withheld_while_its_earlier_segment_is_screened() -> None:
    pool, sink = Pool(), Sink()
    settled = Recent(4.0, settled=(("flag_freeze", 1.1),))
    step = _step(pool, sink, recent=lambda _s, _r: settled)

    def offer(rendition: str, seq: int) -> ScreenJob:
        seg = Segment(b"", "news", rendition, seq)
        step.submit(Message(Record("seg", 0, seq, None, b""), SegmentJob(seg)))
        step.poll(0.0)
        return pool.jobs[-1][1]

    assert offer("640x360", 0).recent == settled  # nothing in flight: the hint holds
    # seq 0 still screened: whether its freeze ends the still shot is not known yet, so
    # seq 1's worker gets no settled triggers (it makes frames if the limits have room)
    held = offer("640x360", 1).recent
    assert held is not None and held.settled == () and held.mos_low == 4.0
    assert offer("320x180", 0).recent == settled  # another rendition's is its own
    first_id, first = pool.jobs[0]
    pool.finish(first_id, first.job.segment)
    second_id, second = pool.jobs[1]
    pool.finish(second_id, second.job.segment)
    third_id, third = pool.jobs[2]
    pool.finish(third_id, third.job.segment)
    step.poll(0.0)
    assert offer("640x360", 2).recent == settled  # decided: the hint holds again


def test_a_renditions_results_are_decided_in_the_order_they_were_sent() -> None:
    # a cheap job can overtake a full one on another worker; the policy must still see
    # the rendition's segments in order (its habits, runs and the jobs' hints depend on it)
    pool, sink = Pool(), Sink()
    step = _step(pool, sink)
    for rendition, seq in (("640x360", 0), ("640x360", 1), ("320x180", 0), ("640x360", 2)):
        step.submit(
            Message(
                Record("seg", 0, seq, None, b""), SegmentJob(Segment(b"", "news", rendition, seq))
            )
        )
    step.poll(0.0)
    (a, ja), (b, jb), (c, jc), (d, jd) = pool.jobs

    def decided() -> list[tuple[str, int]]:
        return [(m.payload.verdict.rendition, m.payload.verdict.seq) for m in sink.got]

    pool.finish(b, jb.job.segment)
    pool.finish(d, jd.job.segment)
    step.poll(0.0)
    assert decided() == []  # held behind seq 0
    pool.finish(c, jc.job.segment)
    step.poll(0.0)
    assert decided() == [("320x180", 0)]  # another rendition is not held
    pool.finish(a, ja.job.segment)
    step.poll(0.0)
    assert decided() == [("320x180", 0), ("640x360", 0), ("640x360", 1), ("640x360", 2)]
    assert not step.running and not step._held


def test_a_job_gets_the_edge_its_renditions_previous_segment_ended_on() -> None:
    # monitor.boundary: the worker judges a hold from a segment's first frames against the
    # picture the segment just before ended on, when that one was decided before it left
    pool, sink = Pool(), Sink()
    step = _step(pool, sink)
    edge = {"first": "A" * 88, "last": "AQ" * 42 + "AQ==", "moving": 1.0}

    def offer(seq: int, rendition: str = "640x360") -> None:
        seg = Segment(b"", "news", rendition, seq)
        step.submit(Message(Record("seg", 0, seq, None, b""), SegmentJob(seg)))
        step.poll(0.0)

    def finish(job_id: int, seq: int, rendition: str = "640x360") -> None:
        v = Verdict(f"news/{rendition}/{seq}", "news", rendition, seq, 4.0, 4.0, (), (), ("x@1",))
        v = dataclasses.replace(v, extra={"edges": edge})
        info = StreamInfo("h264", None, 640, 360, 25.0, "yuv420p", 8, None, 2.0, 1e5, 50, 1, "ts")
        pool.done.append(Screened(job_id, v, info, DecodeSummary(0, 0, 0.1), 0.0))
        step.poll(0.0)

    offer(1)
    offer(2)  # left while 1 was still being screened: no edge
    assert [j.prev_edge for _, j in pool.jobs] == [None, None]
    finish(pool.jobs[0][0], 1)
    finish(pool.jobs[1][0], 2)
    offer(3)
    assert pool.jobs[2][1].prev_edge == Edge(2, edge["last"], True)
    offer(5)  # 4 never came: 3's edge is not the one before 5
    assert pool.jobs[3][1].prev_edge is None
    offer(3, "320x180")  # another rendition of the stream: its own edges
    assert pool.jobs[4][1].prev_edge is None
    finish(pool.jobs[2][0], 3)
    offer(3)  # redelivered: still the edge of the segment before it, not its own
    assert pool.jobs[5][1].prev_edge == Edge(2, edge["last"], True)
