"""A hung ONNX Runtime call turns /healthz red within the watchdog's bound, and the worker
watchdog then kills it, dead-letters the segment, and health returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from ingest.broker import EmbeddedBroker
from tests.integration.conftest import (
    TopicReader,
    Topics,
    daemon_config,
    producer,
    publish,
    wait_for,
)

pytestmark = pytest.mark.integration


def hanging_student(path: Path) -> Path:
    """A model with the student's inputs and outputs whose graph runs a Loop of 10^15 trips:
    a real ONNX Runtime call that does not return."""
    trips = helper.make_tensor("trips", TensorProto.INT64, [], [10**15])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["acc_in"], ["acc_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
    )
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Constant", [], ["trips_c"], value=trips),
        helper.make_node("Constant", [], ["cond_c"], value=cond),
        helper.make_node("Constant", [], ["zero_c"], value=zero),
        helper.make_node("Loop", ["trips_c", "cond_c", "zero_c"], ["acc"], body=body),
        helper.make_node("Cast", ["fragments"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m4"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Add", ["m4", "acc"], ["mos"]),
        helper.make_node("ReduceMean", ["f"], ["deg1"], axes=[1, 2], keepdims=0),
        helper.make_node("Softmax", ["deg1"], ["degradation"], axis=1),
        helper.make_node("ReduceMean", ["f"], ["emb"], axes=[1, 2], keepdims=0),
        helper.make_node("LpNormalization", ["emb"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "hang",
        [helper.make_tensor_value_info("fragments", TensorProto.UINT8, ["n", 224, 224, 3])],
        [
            helper.make_tensor_value_info("mos", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("degradation", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"version": "hang", "degradations": '["a","b","c"]'})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_hung_inference_turns_healthz_red_then_the_worker_watchdog_recovers(
    broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("hang")
    topics.create(bs)
    model = hanging_student(tmp_path / "hang.onnx")
    config = daemon_config(
        tmp_path,
        bs,
        topics,
        decode={"limits": {"decode_timeout_s": 4}},
        pipeline={"decode_workers": 1, "progress_timeout_s": 2, "watchdog_grace_s": 2},
        ingest={"references": {"http_timeout_s": 1}},
    )
    doc = yaml.safe_load(config.read_text())
    doc["scorers"] = [{"type": "artifacts"}, {"type": "distilled", "model_path": str(model)}]
    config.write_text(yaml.safe_dump(doc))
    daemon = start_daemon(config)
    daemon.wait_ready()
    assert daemon.get("/healthz")[0] == 200
    p = producer(bs)
    publish(p, topics.segments, tiny_segments[0], stream="s", rendition="r", seq=0)
    p.flush()
    p.close()
    # Bound: progress_timeout_s (2 s) after the segment reached the worker, plus a turn.
    wait_for(lambda: daemon.get("/healthz")[0] == 503, 20, "/healthz red", daemon)
    code, why = daemon.get("/healthz")
    assert code == 503 and "no progress" in why
    # The job timeout (decode 4 s + grace 2 s + http 1 s) kills the worker: the segment
    # becomes a dead letter, health comes back.
    dead = TopicReader(bs, topics.dead_letter)
    try:
        dead.until(lambda msgs: len(msgs) >= 1, 30, daemon)
    finally:
        dead.close()
    assert dead.messages[0][1]["reason"] == "decode_timeout"
    wait_for(lambda: daemon.get("/healthz")[0] == 200, 10, "/healthz green again", daemon)
    assert np.isfinite(daemon.metric("vqmon_stalled_seconds"))
