"""Settings: defaults < YAML file < environment < keyword overrides; bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.runtime.settings import ConfigError, GrpcSettings, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No RLHF_* variable from the developer's shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("RLHF_"):
            monkeypatch.delenv(name)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env():
    settings = load_settings(Settings)
    assert settings.bus == "inprocess"
    assert settings.grpc == GrpcSettings()
    assert settings.grpc.auth_enabled is False


def test_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    config = write_yaml(
        tmp_path,
        "bus: kafka\n"
        "device: cuda:1\n"
        "grpc:\n  port: 6000\n  max_message_bytes: 2048\n"
        "kafka:\n  bootstrap_servers: yaml:9092\n  topic_partitions: 6\n",
    )
    monkeypatch.setenv("RLHF_GRPC__PORT", "7000")
    monkeypatch.setenv("RLHF_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(Settings, config, device="cpu")
    assert settings.bus == "kafka"  # YAML only
    assert settings.grpc.max_message_bytes == 2048  # YAML only, nested
    assert settings.kafka.topic_partitions == 6
    assert settings.grpc.port == 7000  # env beats YAML
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.device == "cpu"  # override beats YAML


def test_config_file_from_rlhf_config_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CONFIG", str(write_yaml(tmp_path, "grpc:\n  auth_enabled: true\n")))
    assert load_settings(Settings).grpc.auth_enabled is True


@pytest.mark.parametrize(
    ("yaml_text", "env", "key"),
    [
        ("grpc:\n  port: 70000\n", {}, "grpc.port"),
        ("bus: carrier-pigeon\n", {}, "bus"),
        ("", {"RLHF_KAFKA__TOPIC_PARTITIONS": "zero"}, "kafka.topic_partitions"),
        ("bsu: kafka\n", {}, "bsu"),
        ("grpc:\n  no_such_option: 1\n", {}, "grpc.no_such_option"),
        ("telemetry:\n  traces_exporter: jaeger\n", {}, "telemetry.traces_exporter"),
    ],
)
def test_bad_value_raises_config_error_naming_the_key(tmp_path, monkeypatch, yaml_text, env, key):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(Settings, write_yaml(tmp_path, yaml_text))
    assert key in str(excinfo.value)


def test_unreadable_config_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Settings, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(Settings, write_yaml(tmp_path, "grpc: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(Settings, write_yaml(tmp_path, "- a\n- b\n"))
