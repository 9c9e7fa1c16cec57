from ingest.decode import decode
from ingest.types import Segment


def test_decodes_h264_ts(ts_h264: bytes) -> None:
    d = decode(Segment(ts_h264))
    assert d.info.codec == "h264"
    assert d.info.frame_count == 50
    assert (d.info.width, d.info.height) == (320, 180)
    assert len(d.stats) == 50
