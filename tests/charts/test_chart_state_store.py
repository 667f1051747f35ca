"""The chart's PostgreSQL state store (`stateStore.postgres`): the URL reaches every
service from a Secret, the database is reachable through the NetworkPolicies, the
settings read it, and nothing changes when it is off."""

from __future__ import annotations

import pytest

from rlhf.runtime.settings import load_settings
from tests.charts.helmtools import CHART, SERVICES, by_name, env_of, render, render_error

pytestmark = pytest.mark.helm

VARIANT = (str(CHART / "ci" / "postgres-state-values.yaml"),)


def _container(objs, name: str) -> dict:
    return by_name(objs, "Deployment", f"t-rlhf-{name}")["spec"]["template"]["spec"]["containers"][
        0
    ]


def _egress_ports(objs, name: str) -> list[set[int]]:
    policy = by_name(objs, "NetworkPolicy", f"t-rlhf-{name}")
    return [{p["port"] for p in rule["ports"]} for rule in policy["spec"]["egress"]]


def test_every_service_reads_the_url_from_the_secret_and_may_reach_the_database() -> None:
    objs = render(VARIANT)
    for name in SERVICES:
        env = env_of(_container(objs, name))
        assert env["RLHF_STORE__URL"] == {"secretKeyRef": {"name": "rlhf-state-db", "key": "url"}}
        policy = by_name(objs, "NetworkPolicy", f"t-rlhf-{name}")
        [rule] = [r for r in policy["spec"]["egress"] if {p["port"] for p in r["ports"]} == {5432}]
        assert rule["to"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}}}
        ]
    replicas = {
        name: by_name(objs, "Deployment", f"t-rlhf-{name}")["spec"]["replicas"]
        for name in ("dataprep", "trainer")
    }
    assert replicas == {"dataprep": 2, "trainer": 2}
    assert not [o for o in objs if o["kind"] == "Secret"], "the URL must come from a Secret"


def test_the_rendered_variable_is_the_settings_store_url(monkeypatch) -> None:
    """What the Secret holds, as the service reads it: a PostgreSQL URL, kept secret."""
    monkeypatch.setenv("RLHF_STORE__URL", "postgresql://rlhf:s3cret@db.db.svc:5432/rlhf")
    settings = load_settings()
    assert settings.store.postgres_url == "postgresql://rlhf:s3cret@db.db.svc:5432/rlhf"
    assert "s3cret" not in repr(settings)


def test_off_by_default_no_url_and_no_database_egress() -> None:
    objs = render()
    for name in SERVICES:
        assert "RLHF_STORE__URL" not in env_of(_container(objs, name))
        assert {5432} not in _egress_ports(objs, name)


def test_enabled_without_a_secret_fails_naming_the_key() -> None:
    assert "stateStore.postgres.existingSecret" in render_error("stateStore.postgres.enabled=true")


def test_without_peers_the_database_is_reachable_on_its_ports_only() -> None:
    objs = render(
        (),
        (
            "stateStore.postgres.enabled=true",
            "stateStore.postgres.existingSecret=db",
            "stateStore.postgres.ports={6432}",
        ),
    )
    policy = by_name(objs, "NetworkPolicy", "t-rlhf-dataprep")
    [rule] = [r for r in policy["spec"]["egress"] if {p["port"] for p in r["ports"]} == {6432}]
    assert "to" not in rule
