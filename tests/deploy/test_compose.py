"""The docker compose demo: valid compose, and a forwarder wired to Kafka and Loki for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import ROOT, forwarder_check

COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as data."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def forwarder(compose: dict[str, Any]) -> dict[str, Any]:
    """The forwarder service."""
    service: dict[str, Any] = compose["services"]["forwarder"]
    return service


def _config_mount(forwarder: dict[str, Any]) -> tuple[Path, str]:
    (mount,) = [v for v in forwarder["volumes"] if v.split(":")[1].endswith(".toml")]
    source, target, *_ = mount.split(":")
    return ROOT / source, target


def test_compose_file_follows_the_compose_specification() -> None:
    """check-jsonschema accepts docker-compose.yml against the compose specification."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
         "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_forwarder_reads_the_host_kernel_log_with_cap_syslog_only(
    forwarder: dict[str, Any],
) -> None:
    """The forwarder gets the host's /dev/kmsg, CAP_SYSLOG alone and a read-only root."""
    assert "/dev/kmsg:/dev/kmsg:r" in forwarder["devices"]
    assert forwarder["cap_drop"] == ["ALL"]
    assert forwarder["cap_add"] == ["SYSLOG"]
    assert forwarder["read_only"] is True
    # no-new-privileges would strip the interpreter's file capability.
    assert "no-new-privileges" not in str(forwarder.get("security_opt", ""))


def test_forwarder_config_is_accepted_and_fans_out_to_kafka_and_loki(
    compose: dict[str, Any], forwarder: dict[str, Any], tmp_path: Path
) -> None:
    """The mounted config passes `kmsg-forwarder check` and ships to the stack's Kafka and Loki."""
    source, target = _config_mount(forwarder)
    assert forwarder["command"][-2:] == ["--config", target]
    effective = forwarder_check(source.read_text(), tmp_path)
    sinks = effective["sinks"]
    assert {sink["type"] for sink in sinks.values()} == {"kafka", "loki"}
    (kafka,) = [s for s in sinks.values() if s["type"] == "kafka"]
    (loki,) = [s for s in sinks.values() if s["type"] == "loki"]
    kafka_env = compose["services"]["kafka"]["environment"]
    assert kafka["bootstrap_servers"] == [kafka_env["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]]
    topic_command = compose["services"]["kafka-topic"]["command"]
    assert topic_command[topic_command.index("--topic") + 1] == kafka["topic"]
    assert urlsplit(loki["endpoint"]).hostname in compose["services"]
    port = effective["metrics"]["listen"].rpartition(":")[2]
    assert f"127.0.0.1:{port}:{port}" in forwarder["ports"]


def test_checkpoints_are_kept_in_a_named_volume(
    compose: dict[str, Any], forwarder: dict[str, Any], tmp_path: Path
) -> None:
    """The config's state_dir is a named volume, so checkpoints outlive the container."""
    source, _ = _config_mount(forwarder)
    state_dir = forwarder_check(source.read_text(), tmp_path)["state_dir"]
    mounts = dict(v.split(":")[1::-1] for v in forwarder["volumes"])
    assert mounts[state_dir] in compose["volumes"]


def test_compose_up_settles_by_itself(compose: dict[str, Any]) -> None:
    """Every dependency waits on a condition, and each awaited service can report it."""
    services = compose["services"]
    image_healthchecks = {"forwarder"}  # HEALTHCHECK in the Dockerfile
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency] or dependency in image_healthchecks
            else:
                assert condition == "service_completed_successfully", (name, dependency)
                assert services[dependency]["restart"] == "no"
    forwarder_deps = services["forwarder"]["depends_on"]
    assert {"kafka-topic", "loki"} <= set(forwarder_deps)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_grafana_shows_loki_by_level_and_facility(
    compose: dict[str, Any], forwarder: dict[str, Any], tmp_path: Path
) -> None:
    """Grafana's provisioned data source is the stack's Loki; the dashboard groups by level and facility."""
    provisioning = ROOT / "deploy/compose/grafana/provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources/loki.yaml").read_text())[
        "datasources"
    ]
    assert urlsplit(datasource["url"]).hostname == "loki"
    assert "loki" in compose["services"]
    dashboard = json.loads((ROOT / "deploy/compose/grafana/dashboards/kernel-log.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert any("by (level)" in expr for expr in exprs)
    assert any("by (facility)" in expr for expr in exprs)
    source, _ = _config_mount(forwarder)
    (loki,) = [
        s
        for s in forwarder_check(source.read_text(), tmp_path)["sinks"].values()
        if s["type"] == "loki"
    ]
    assert {"level", "facility"} <= set(loki["label_fields"])
    for name, value in loki["labels"].items():
        assert all(f'{name}="{value}"' in expr for expr in exprs)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]


def test_grafana_has_a_kernel_events_panel_on_labels_the_loki_sink_sets(
    forwarder: dict[str, Any], tmp_path: Path
) -> None:
    """The dashboard counts kernel events by class; the demo's Loki sink labels event and class."""
    dashboard = json.loads((ROOT / "deploy/compose/grafana/dashboards/kernel-log.json").read_text())
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    (target,) = panels["Kernel events by class"]["targets"]
    assert 'event="kernel_event"' in target["expr"]
    assert "by (class)" in target["expr"]
    source, _ = _config_mount(forwarder)
    (loki,) = [
        s
        for s in forwarder_check(source.read_text(), tmp_path)["sinks"].values()
        if s["type"] == "loki"
    ]
    assert {"event", "class"} <= set(loki["label_fields"])
    record_panels = [p for p in dashboard["panels"] if "Kernel events" not in p["title"]]
    for panel in record_panels:
        assert all('event="kmsg"' in t["expr"] for t in panel["targets"])
