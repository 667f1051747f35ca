"""Validated settings from environment variables and an optional YAML file.

Precedence, highest first: keyword overrides, environment variables (prefix `RLHF_`,
nested keys joined with `__`, e.g. `RLHF_KAFKA__BOOTSTRAP_SERVERS`), the YAML file named
by `RLHF_CONFIG` (or passed explicitly), then the defaults below. A bad value fails with
a `ConfigError` that names the key, before anything starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class _Section(BaseModel):
    """A nested settings section: a misspelled key fails instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    """Connection to a Kafka cluster (used when `bus = "kafka"`)."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port]")
    client_id: str = "rlhf"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topic_partitions: int = Field(3, ge=1, description="partitions for topics created on start")
    topic_replication: int = Field(1, ge=1, description="replication factor for created topics")
    metadata_max_age_ms: int = Field(
        10_000,
        ge=1_000,
        description="how often consumers refresh topic metadata; a consumer group that "
        "missed a topic's partitions picks them up within this time",
    )


class GrpcSettings(_Section):
    """gRPC server options shared by every service."""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    shutdown_grace_s: float = Field(3.0, ge=0)
    max_concurrent_rpcs: int = Field(
        256, ge=1, description="calls handled at once; more are refused RESOURCE_EXHAUSTED"
    )
    default_deadline_s: float = Field(
        300.0, gt=0, description="deadline of a unary call whose client set none"
    )
    auth_enabled: bool = False
    # File with one bearer token per line, optionally followed by its role, name and
    # services: "<token> operator alice services=trainer,dataprep" (see grpc/auth.py).
    # A token alone is an admin token. A mounted Kubernetes Secret works as is.
    auth_tokens_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Set to require client certificates signed by this CA (mTLS).
    tls_client_ca_file: Path | None = None


class TelemetrySettings(_Section):
    service_name: str = "rlhf"
    # "none", "console" or "otlp" (OTLP needs opentelemetry-exporter-otlp installed).
    traces_exporter: Literal["none", "console", "otlp", "memory"] = "none"
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 = off")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "text"


class StoreSettings(_Section):
    """Where the durable shared state lives (feedback, event dedupe, pipeline state,
    run claims and leases; `rlhf.store`)."""

    url: SecretStr | None = Field(
        None,
        description="postgresql://user:password@host:5432/db for state that several "
        "replicas write (RLHF_STORE__URL, from a Secret; never logged). Unset: SQLite "
        "files and lock files under <artifact_dir>/state, for one process per service",
    )

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL (unset for SQLite files)")
        return value

    @property
    def postgres_url(self) -> str | None:
        return self.url.get_secret_value() if self.url is not None else None


class Settings(BaseSettings):
    """Settings every process shares. Services subclass it to add their own."""

    model_config = SettingsConfigDict(
        env_prefix="RLHF_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        Path("data"), description="root of input data sets (tests point it at ../shared/data)"
    )
    artifact_dir: Path = Field(Path("artifacts"), description="local artifact store root")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")
    torch_threads: int = Field(
        1,
        ge=0,
        description="intra-op CPU threads per process (0 = torch's default, one per core). "
        "1 by default: several processes sharing a few cores otherwise spin-wait on each "
        "other (measured 11x slower pre-training on 2 shared cores)",
    )
    run_shutdown_grace_s: float = Field(
        15.0,
        ge=0,
        description="seconds a stopping service waits for its running runs to stop at "
        "their next progress report before it exits anyway (a worker stuck on a hung "
        "read); they are left for resume. With grpc.shutdown_grace_s it stays under the "
        "chart's terminationGracePeriodSeconds (30)",
    )
    run_lease_ttl_s: float = Field(
        45.0,
        gt=0,
        description="seconds without a heartbeat after which another replica of the "
        "service takes over a replica's unfinished runs (runtime/runs.py)",
    )
    bus: Literal["inprocess", "kafka"] = "inprocess"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by RLHF_CONFIG (or the `_config_file` override)."""

    path: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _YamlSource.path or (
            Path(os.environ["RLHF_CONFIG"]) if "RLHF_CONFIG" in os.environ else None
        )
        if path is None:
            return {}
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        return loaded


SettingsT = TypeVar("SettingsT", bound=Settings)


def load_settings(
    cls: type[SettingsT] = Settings, config_file: str | Path | None = None, **overrides: Any
) -> SettingsT:
    """Build settings, turning pydantic's errors into one ConfigError naming each bad key."""
    _YamlSource.path = Path(config_file) if config_file else None
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "<root>"
            got = "<redacted>" if key.startswith("store.url") else repr(error.get("input"))
            problems.append(f"{key}: {error['msg']} (got {got})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    finally:
        _YamlSource.path = None
