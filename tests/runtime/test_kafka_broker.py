"""The real Kafka broker the project provisions (rlhf.runtime.kafka_broker)."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhf.runtime import kafka_broker
from rlhf.runtime.kafka_broker import (
    DEFAULT_KAFKA_VERSION,
    KafkaBroker,
    KafkaBrokerConfig,
    KafkaBrokerError,
    format_command,
    format_storage,
    kafka_home,
    provision,
)
from tests.kafka_plugin import KafkaInfo


@pytest.mark.kafka
def test_broker_version(kafka_info: KafkaInfo, record_property, capsys) -> None:
    """Shows (and records) which Kafka the suite ran against."""
    record_property("kafka_version", kafka_info.version)
    record_property("kafka_bootstrap", kafka_info.bootstrap_servers)
    with capsys.disabled():
        print(f"\nkafka broker under test: {kafka_info.version} ({kafka_info.origin})")
    if kafka_info.origin == "provisioned":
        expected = os.environ.get("RLHF_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)
        assert kafka_info.version == expected and expected.startswith("4.")
        libs = kafka_home() / expected / "libs"
        assert (libs / f"kafka_2.13-{expected}.jar").exists()
        # Kafka logs through slf4j 1.7; the log4j2 binding must be on the classpath.
        assert list(libs.glob("log4j-slf4j-impl-*.jar")) and list(libs.glob("log4j-core-*.jar"))
    else:
        assert kafka_info.version.startswith("api ")


@pytest.mark.kafka
def test_broker_restarts_on_its_data_dir(kafka_info: KafkaInfo, tmp_path: Path) -> None:
    """A second broker: stops cleanly, restarts on the same storage and port, keeps data."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    config = KafkaBrokerConfig(data_dir=tmp_path / "kafka", heap="256m")
    with KafkaBroker(config) as broker:
        first_address = broker.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=first_address)
        admin.create_topics([NewTopic("kept", 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=first_address, acks="all")
        producer.send("kept", b"survives a restart").get(timeout=30)
        producer.close()
    assert not broker.running()
    with KafkaBroker(config) as again:
        assert again.bootstrap_servers == first_address
        consumer = KafkaConsumer(bootstrap_servers=again.bootstrap_servers)
        consumer.assign([TopicPartition("kept", 0)])
        consumer.seek_to_beginning()
        values = [r.value for recs in consumer.poll(timeout_ms=10_000).values() for r in recs]
        consumer.close()
    assert values == [b"survives a restart"]


@pytest.mark.kafka
def test_cli_provision_reports_the_jars(kafka_info: KafkaInfo) -> None:
    from rlhf.cli.kafka import app

    result = CliRunner().invoke(app, ["provision"])
    assert result.exit_code == 0, result.output
    assert f"Kafka {DEFAULT_KAFKA_VERSION}:" in result.output and "jars in" in result.output


def test_provision_without_maven_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn on it
    with pytest.raises(KafkaBrokerError, match="mvn not found.*apt-get install maven"):
        provision("4.4.0", home=tmp_path / "cache")


def test_kafka_home_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_KAFKA_HOME", str(tmp_path))
    assert kafka_home() == tmp_path
    monkeypatch.delenv("RLHF_KAFKA_HOME")
    assert kafka_home() == Path.home() / ".cache" / "rlhf" / "kafka"


# A URL-safe base64 cluster id that starts with "-": 1 random id in 64 looked like this,
# and `format -t <id>` then failed with "argument --cluster-id/-t: expected one argument".
DASH_ID = base64.urlsafe_b64encode(bytes([0xF8]) + bytes(range(1, 16))).decode().rstrip("=")


def test_cluster_ids_never_begin_with_an_option_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DASH_ID.startswith("-")
    # uuid4 first yields the dash id and the all-zero id, then a good one: both are redrawn.
    draws = iter([DASH_ID, "AAAAAAAAAAAAAAAAAAAAAA", "Zm9vYmFyYmF6cXV4cXV1eA"])
    monkeypatch.setattr(
        kafka_broker.uuid,
        "uuid4",
        lambda: uuid.UUID(bytes=base64.urlsafe_b64decode(next(draws) + "==")),
    )
    assert kafka_broker._random_cluster_id() == "Zm9vYmFyYmF6cXV4cXV1eA"


def test_random_cluster_ids_are_22_url_safe_chars_starting_alphanumeric() -> None:
    ids = {kafka_broker._random_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    for cluster_id in ids:
        assert len(cluster_id) == 22 and cluster_id[0].isalnum(), cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_format_command_passes_the_cluster_id_as_one_argument(tmp_path: Path) -> None:
    props = tmp_path / "server.properties"
    cmd = format_command(["java", "-cp", "libs/*"], "kafka.tools.StorageTool", props, DASH_ID)
    assert cmd[3:] == [
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        f"--cluster-id={DASH_ID}",
        "-c",
        str(props),
    ]
    assert DASH_ID not in cmd  # never a bare argument the parser could read as an option


@pytest.mark.kafka
def test_real_storage_tool_formats_with_a_dash_cluster_id(tmp_path: Path) -> None:
    """The real storage tool accepts the command line with an id that begins with "-"."""
    root = provision(os.environ.get("RLHF_KAFKA_VERSION", DEFAULT_KAFKA_VERSION))
    libs = root / "libs"
    props = tmp_path / "server.properties"
    broker = KafkaBroker(KafkaBrokerConfig())
    props.write_text(broker._server_properties(tmp_path, 19092, 19093))
    jvm = [
        kafka_broker._java(),
        "-Xmx256m",
        f"-Dkafka.logs.dir={tmp_path}",
        f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
        "-cp",
        str(libs / "*"),
    ]
    format_storage(jvm, kafka_broker._storage_tool_class(libs), props, DASH_ID)
    meta = (tmp_path / "kraft-logs" / "meta.properties").read_text()
    assert f"cluster.id={DASH_ID}\n" in meta
