"""Strict YAML config: unknown keys and bad values name their line and the fix; env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_and_examples_are_valid() -> None:
    for path in [
        ROOT / "configs/default.yaml",
        *sorted((ROOT / "configs/examples").glob("*.yaml")),
    ]:
        load_config(path, env={"VQMON_KAFKA__SASL_PASSWORD": "x"})


def test_unknown_key_names_line_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  group_id: g\n  sesion_timeout_ms: 5000\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert f"{path}:3: kafka.sesion_timeout_ms: unknown key" in text
    assert "Did you mean 'session_timeout_ms'?" in text


def test_bad_value_names_line_inside_scorer_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pipeline:\n  decode_workers: 0\n"
        "scorers:\n  - type: artifacts\n    black:\n      bogus: 1\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"{path}:2: pipeline.decode_workers:") for line in lines)
    assert any(line.startswith(f"{path}:6: scorers.0.black.bogus: unknown key") for line in lines)


def test_cross_field_check_says_how_to_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert f"{path}:1: kafka:" in str(err.value)
    assert "VQMON_KAFKA__SASL_PASSWORD" in str(err.value)


def test_environment_overrides_secrets_and_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: vqmon\n",
    )
    cfg = load_config(
        path,
        env={
            "VQMON_KAFKA__SASL_PASSWORD": "0123",
            "VQMON_KAFKA__BOOTSTRAP_SERVERS": "a:9092,b:9092",
        },
    )
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == "0123"
    assert cfg.kafka.bootstrap_servers == ["a:9092", "b:9092"]
    assert "0123" not in cfg.model_dump_json()


def test_env_error_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"VQMON_PIPELINE__DECODE_WORKERS": "many"})
    assert "environment variable VQMON_PIPELINE__DECODE_WORKERS" in str(err.value)


def test_duplicate_key_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=":2: key 'kafka' appears twice"):
        load_config(write(tmp_path, "kafka: {}\nkafka: {}\n"), env={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "kafka: [\n"), env={})


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "configs/default.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, "pipline: {}\n"))]) == 2
    assert "Did you mean 'pipeline'?" in capsys.readouterr().err


def test_escalation_and_diagnose_sections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "escalation:\n  frames: {max_frames: 4}\n"
            "diagnose:\n  queue: 3\n  backend: {type: openai, base_url: 'http://127.0.0.1:8000/v1',"
            " model: m}\n",
        ),
        env={},
    )
    assert cfg.escalation.frames.max_frames == 4 and cfg.diagnose.queue == 3
    assert cfg.diagnose.backend.type == "openai"
    assert cfg.kafka.topics.escalations == "vqmon.escalations"
    bad = write(tmp_path, "diagnose:\n  queue: 0\n")
    assert main(["run", "--role", "diagnose", "--config", str(bad)]) == 2
    assert ":2: diagnose.queue" in capsys.readouterr().err


@pytest.mark.parametrize("password", ["[brackets]", "{braces: 1}", "[unclosed", "{", "- dash"])
def test_env_passwords_stay_strings_whatever_they_start_with(password: str) -> None:
    env = {
        "VQMON_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "VQMON_KAFKA__SASL_MECHANISM": "PLAIN",
        "VQMON_KAFKA__SASL_USERNAME": "[user]",
        "VQMON_KAFKA__SASL_PASSWORD": password,
        "VQMON_KAFKA__BOOTSTRAP_SERVERS": "[a:9092, b:9092]",
    }
    cfg = load_config(None, env=env)
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == password
    assert cfg.kafka.sasl_username == "[user]"
    assert cfg.kafka.bootstrap_servers == ["a:9092", "b:9092"]  # lists still take flow style
