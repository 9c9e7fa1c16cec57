"""What an operator's first mistakes get: one line saying what is wrong and how to fix it,
never a traceback (a missing model or TLS file, a typo in a list item, a port in use, a
demo too short for its faults, an extra not installed, a summary for every role)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAuthorizationFailedError

from monitor.cli import main
from monitor.config import ConfigError, load_config
from monitor.pipeline import Summary
from monitor.run import _stop_feed, kafka_failure, render_summary

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_check_config_loads_the_models_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = write(
        tmp_path, "scorers:\n  - type: distilled\n    model_path: /nonexistent/s.onnx\n"
    )
    assert main(["check-config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "scorers.0: distilled model not found: /nonexistent/s.onnx" in err
    assert "Traceback" not in err
    # not a model at all: ONNX Runtime's refusal, with the fix
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    path = write(tmp_path, f"scorers:\n  - type: distilled\n    model_path: {junk}\n")
    assert main(["check-config", str(path)]) == 2
    assert "cannot be loaded by ONNX Runtime" in capsys.readouterr().err
    # the shape alone, for another host; and a role that reads no model (one config
    # serves every role's hosts)
    assert main(["check-config", "--no-files", str(missing)]) == 0
    assert main(["check-config", "--role", "judge", str(missing)]) == 0
    assert main(["check-config", "--role", "diagnose", str(missing)]) == 0
    assert main(["check-config", "--role", "screen", str(missing)]) == 2
    assert main(["check-config", str(ROOT / "configs/default.yaml")]) == 0


def test_check_config_names_tls_files_this_host_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "kafka:\n  bootstrap_servers: [b:9093]\n  security_protocol: SSL\n"
        "  ssl_cafile: /nonexistent/ca.pem\n",
    )
    assert main(["check-config", str(path)]) == 2
    assert "kafka.ssl_cafile: /nonexistent/ca.pem not found" in capsys.readouterr().err
    # and `run` refuses it the same way before it connects
    assert main(["run", "--config", str(path), "--duration", "1"]) == 1
    assert "kafka.ssl_cafile: /nonexistent/ca.pem not found" in capsys.readouterr().err
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    ok = write(tmp_path, path.read_text().replace("/nonexistent/ca.pem", str(ca)))
    assert main(["check-config", str(ok)]) == 0


def test_check_config_names_a_vlm_folder_without_its_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f"diagnose:\n  backend:\n    type: transformers\n    model_path: {tmp_path}\n",
    )
    assert main(["check-config", str(path)]) == 2
    assert f"diagnose.backend.model_path: {tmp_path} has no config.json" in (
        capsys.readouterr().err
    )
    assert main(["check-config", "--role", "screen", str(path)]) == 0


def test_an_unknown_key_in_a_list_item_lists_that_item_s_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "scorers:\n  - type: artifacts\n  - type: distilled\n    model: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    # the distilled scorer's keys, not the first item's (the artifacts scorer's)
    assert "scorers.1.model: unknown key 'model'. Did you mean 'model_path'?" in text
    assert "blockiness" not in text


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "diagnose:\n  backend:\n    type: transformers\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "diagnose.backend.model_path: Field required" in str(err.value)


def test_demo_refuses_a_duration_too_short_and_a_port_in_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--duration", "20"]) == 2
    assert "too short to play every fault" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["demo", "--duration", "60", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve /metrics on 127.0.0.1:{port} (Address already in use)" in err
    assert "--port" in err


def test_a_missing_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import monitor.train

    def without_torch(args: Any) -> int:  # what importing the training code raises then
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    real_spec = importlib.util.find_spec

    def spec(name: str, *args: Any) -> Any:  # this host as one without the train extra
        return None if name == "torch" else real_spec(name, *args)

    monkeypatch.setattr(monitor.train, "run_corpus", without_torch)
    monkeypatch.setattr(importlib.util, "find_spec", spec)
    assert main(["train", "corpus", "--out", str(tmp_path / "c")]) == 2
    assert "needs torch, from the 'train' extra: pip install 'vqmon[train]'" in (
        capsys.readouterr().err
    )

    def without_yaml(args: Any) -> int:  # not an extra's module: a real bug, raised
        raise ModuleNotFoundError("No module named 'nosuch'", name="nosuch")

    monkeypatch.setattr(monitor.train, "run_corpus", without_yaml)
    with pytest.raises(ModuleNotFoundError):
        main(["train", "corpus", "--out", str(tmp_path / "c")])

    def broken_onnx(args: Any) -> int:  # a submodule gone from an installed package
        raise ModuleNotFoundError("No module named 'onnx.nosuch'", name="onnx.nosuch")

    monkeypatch.setattr(monitor.train, "run_corpus", broken_onnx)
    with pytest.raises(ModuleNotFoundError):  # installed: reinstalling the extra won't help
        main(["train", "corpus", "--out", str(tmp_path / "c")])


def test_a_kafka_failure_at_start_says_which_it_is() -> None:
    cfg = load_config(ROOT / "configs/default.yaml", env={})
    gone = kafka_failure(KafkaTimeoutError("Unable to bootstrap from ['b:9092']"), cfg)
    assert gone.startswith("cannot reach the Kafka brokers")
    no_brokers = type("NoBrokersAvailable", (KafkaError,), {})  # kafka-python 2.x's
    assert kafka_failure(no_brokers(), cfg).startswith("cannot reach")
    refused = kafka_failure(TopicAuthorizationFailedError("vqmon.verdicts"), cfg)
    assert "failed: TopicAuthorizationFailedError" in refused
    assert "kafka.create_topics: false" in refused and "cannot reach" not in refused


def test_a_feed_that_cannot_flush_at_stop_ends_the_run_quietly() -> None:
    class Unflushed:
        published = 7

        def stop(self) -> None:
            raise KafkaTimeoutError("Timeout waiting for future")

    summary = Summary(100.0)
    _stop_feed(Unflushed(), summary)  # type: ignore[arg-type]
    assert summary.published == 7


def test_every_role_gets_a_summary() -> None:
    cfg = load_config(ROOT / "configs/default.yaml", env={})
    totals = {"incidents_opened": 3, "encoder_decisions": 1}
    judge = Summary(100.0, 110.0, roles=("judge",), judge=totals)
    text = render_summary(judge, cfg)
    assert text.startswith("vqmon: ran the judge role for 10 s")
    assert "3 incidents opened on vqmon.incidents, 1 encoder decisions" in text
    diagnose = Summary(100.0, 104.0, roles=("diagnose",))
    assert render_summary(diagnose, cfg).startswith("vqmon: ran the diagnose role for 4 s")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("vqmon 0.")


def test_a_client_closing_mid_refresh_logs_no_error(capsys: pytest.CaptureFixture[str]) -> None:
    # kafka-python 3 logged "error kafka.cluster: Metadata refresh: failed Cancelled" in the
    # demo's first seconds: a client closed while its refresh was in flight. A real refresh
    # failure still shows.
    import logging

    from kafka import errors

    from monitor import logs

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.setup("INFO", "text")
        cluster = logging.getLogger("kafka.cluster")
        cluster.error("Metadata refresh: failed %s", errors.Cancelled())
        cluster.error("Metadata refresh: failed %s", errors.NodeNotReadyError("metadata"))
        manager = logging.getLogger("kafka.net.manager")
        manager.error("Bootstrap attempt to %s failed: %s", "bootstrap-0", errors.Cancelled())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Cancelled" not in err and "NodeNotReadyError" in err and "Bootstrap" not in err
