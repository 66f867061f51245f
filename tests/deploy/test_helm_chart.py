"""The Helm chart, linted and rendered by Helm's real engine, checked where users rely on it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest
import yaml

from forwarder.kernel_events import CLASSES
from forwarder.sinks import SinkConfig
from forwarder.telemetry.metrics import Metrics
from tests.deploy.conftest import CHART, forwarder_check
from tests.support.helm import helm_sdkpy, lint_errors, render_chart

KUBERNETES_VERSION = "1.31.0"
STATE_DIR = "/var/lib/kmsg-forwarder"


def _kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


def _forwarder(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = _kind(objects, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "forwarder"]
    return container


def _volume(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pod = _kind(objects, "DaemonSet")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return volume


def _mount(container: dict[str, Any], name: str) -> dict[str, Any]:
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == name]
    return mount


def _config_text(objects: list[dict[str, Any]]) -> str:
    text: str = _kind(objects, "ConfigMap")["data"]["config.toml"]
    return text


def _exported_series_names() -> set[str]:
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    """The chart rendered with its default values."""
    return render_chart(CHART)


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A scratch copy of the chart that a test may break."""
    return Path(shutil.copytree(CHART, tmp_path / "kmsg-forwarder"))


def test_chart_lints_clean() -> None:
    """Helm's lint (templates rendered with the chart's values, schema applied) finds no error."""
    assert lint_errors(CHART) == []


def test_the_schema_lists_exactly_the_forwarders_sink_types() -> None:
    """values.schema.json accepts every sink type the forwarder has, and no other."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    listed = set(schema["definitions"]["sink"]["properties"]["type"]["enum"])
    (union, *_) = get_args(SinkConfig)
    types = {get_args(model.model_fields["type"].annotation)[0] for model in get_args(union)}
    assert listed == types


def test_lint_fails_on_a_broken_template(chart_copy: Path) -> None:
    """A template that does not parse makes lint fail, so the lint test can catch one."""
    template = chart_copy / "templates" / "service.yaml"
    template.write_text(template.read_text() + "\n{{ .Values.metrics.port \n", encoding="utf-8")
    assert "templates/" in lint_errors(chart_copy)


def test_lint_fails_on_values_that_break_the_schema(chart_copy: Path) -> None:
    """values.yaml that violates values.schema.json makes lint fail."""
    values = yaml.safe_load((chart_copy / "values.yaml").read_text())
    values["metrics"]["port"] = "http"
    (chart_copy / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    assert "values.yaml" in lint_errors(chart_copy)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"metrics": {"port": 70000}}, "port"),
        ({"privileged": "yes"}, "privileged"),
        ({"stateDir": {"hostPath": "relative/dir"}}, "hostPath"),
        ({"sinks": {"out": {"path": "/x"}}}, "type"),
        ({"sinks": {"out": {"type": "syslog"}}}, "type"),
        ({"config": {"metrics": {"listen": "0.0.0.0:1"}}}, "listen"),
        ({"sinks": {"k": {"type": "kafka", "sasl": {"password": "hunter2"}}}}, "password"),
        ({"sinks": {"l": {"type": "loki", "bearer_token": "abc"}}}, "bearer_token"),
        (
            {"sinks": {"h": {"type": "http", "headers": {"Authorization": "Bearer x"}}}},
            "Authorization",
        ),
        ({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, "SYSLOG"),
    ],
)
def test_install_refuses_bad_values(values: dict[str, Any], complaint: str) -> None:
    """Values that break the schema (inline secrets included) fail at install, naming the key."""
    helm = helm_sdkpy()
    with pytest.raises(helm.InstallError, match="schema") as failure:
        render_chart(CHART, values)
    assert complaint in str(failure.value)


def test_default_config_is_accepted_by_check(
    default_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The config the chart renders by default passes `kmsg-forwarder check`, host = node name."""
    effective = forwarder_check(_config_text(default_objects), tmp_path, NODE_NAME="node-7")
    assert effective["host"] == "node-7"
    assert effective["state_dir"] == STATE_DIR
    assert list(effective["sinks"]) == ["stdout"]


def test_dev_kmsg_is_mounted_from_the_host_as_a_char_device(
    default_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The host's /dev/kmsg is a CharDevice hostPath mounted where the config reads it."""
    volume = _volume(default_objects, "kmsg")
    assert volume["hostPath"] == {"path": "/dev/kmsg", "type": "CharDevice"}
    mount = _mount(_forwarder(default_objects), "kmsg")
    effective = forwarder_check(_config_text(default_objects), tmp_path, NODE_NAME="n")
    assert mount["mountPath"] == effective["source"]["path"] == "/dev/kmsg"
    assert mount["readOnly"] is True


def test_checkpoints_live_on_a_host_path(
    default_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The config's state_dir is a hostPath mount, so checkpoints survive pod restarts."""
    volume = _volume(default_objects, "state")
    assert volume["hostPath"] == {"path": STATE_DIR, "type": "DirectoryOrCreate"}
    effective = forwarder_check(_config_text(default_objects), tmp_path, NODE_NAME="n")
    assert _mount(_forwarder(default_objects), "state")["mountPath"] == effective["state_dir"]


def test_only_cap_syslog_and_a_read_only_root(default_objects: list[dict[str, Any]]) -> None:
    """The forwarder runs non-root, read-only, with every capability dropped but SYSLOG."""
    context = _forwarder(default_objects)["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0
    assert "privileged" not in context
    # no_new_privs would strip the interpreter's file capability (see the Dockerfile).
    assert context["allowPrivilegeEscalation"] is True


def test_state_directory_is_handed_to_the_non_root_user(
    default_objects: list[dict[str, Any]],
) -> None:
    """An init container with CAP_CHOWN alone chowns the hostPath state dir to runAsUser."""
    pod = _kind(default_objects, "DaemonSet")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    user = _forwarder(default_objects)["securityContext"]["runAsUser"]
    assert init["command"] == ["chown", f"{user}:{user}", STATE_DIR]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert _mount(init, "state")["mountPath"] == STATE_DIR


def test_privileged_fallback() -> None:
    """privileged=true runs the forwarder privileged as root, without the chown init container."""
    objects = render_chart(CHART, {"privileged": True})
    context = _forwarder(objects)["securityContext"]
    assert context["privileged"] is True
    assert context["runAsUser"] == 0
    assert "initContainers" not in _kind(objects, "DaemonSet")["spec"]["template"]["spec"]


@pytest.mark.parametrize("port", [9108, 9300])
def test_probes_hit_the_configured_metrics_listener(port: int, tmp_path: Path) -> None:
    """Liveness on /healthz and readiness on /readyz target the port the config listens on."""
    objects = render_chart(CHART, {"metrics": {"port": port}})
    container = _forwarder(objects)
    effective = forwarder_check(_config_text(objects), tmp_path, NODE_NAME="n")
    listen_port = int(effective["metrics"]["listen"].rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == listen_port == port
    service = _kind(objects, "Service")
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_scheduling_for_every_node(default_objects: list[dict[str, Any]]) -> None:
    """Tolerates every taint, is node-critical, and rolls out a bounded share of nodes at a time."""
    daemonset = _kind(default_objects, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]
    assert _forwarder(default_objects)["resources"]["limits"]["memory"]


def test_sinks_and_secret_files_from_values(tmp_path: Path) -> None:
    """Sinks given as values render to a config check accepts; secrets come as Secret files."""
    values = {
        "sinks": {
            "kafka": {
                "type": "kafka",
                "bootstrap_servers": ["kafka-0.kafka:9092", "kafka-1.kafka:9092"],
                "topic": "kmsg",
                "linger_ms": 20,
                "sasl": {
                    "mechanism": "SCRAM-SHA-512",
                    "username": "kmsg",
                    "password_file": "/etc/kmsg-forwarder/secrets/kafka/password",
                },
            },
            "loki": {
                "type": "loki",
                "endpoint": "http://loki-gateway.logging:80",
                "tenant_id": "platform",
                "labels": {"job": "kmsg"},
                "bearer_token_file": "/etc/kmsg-forwarder/secrets/loki/token",
            },
        },
        "secretMounts": [
            {
                "name": "kafka",
                "secretName": "kafka-sasl",
                "mountPath": "/etc/kmsg-forwarder/secrets/kafka",
            },
            {
                "name": "loki",
                "secretName": "loki-token",
                "mountPath": "/etc/kmsg-forwarder/secrets/loki",
            },
        ],
        "config": {"source": {"min_level": "info"}, "batch": {"max_records": 1000}},
    }
    objects = render_chart(CHART, values)
    text = _config_text(objects)
    assert "max_records = 1000\n" in text  # whole numbers stay integers in the TOML
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "password").write_text("s3cret\n")
    (secrets_dir / "token").write_text("t0ken\n")
    local = text.replace("/etc/kmsg-forwarder/secrets/kafka", str(secrets_dir)).replace(
        "/etc/kmsg-forwarder/secrets/loki", str(secrets_dir)
    )
    effective = forwarder_check(local, tmp_path, NODE_NAME="n")
    assert set(effective["sinks"]) == {"kafka", "loki"}
    assert effective["source"]["min_level"] == 6
    assert "s3cret" not in text + str(effective)
    container = _forwarder(objects)
    for name, secret in (("kafka", "kafka-sasl"), ("loki", "loki-token")):
        assert _volume(objects, f"secret-{name}")["secret"]["secretName"] == secret
        assert _mount(container, f"secret-{name}")["readOnly"] is True
    assert not [obj for obj in objects if obj["kind"] == "Secret"]


def test_monitoring_objects_reference_real_metrics() -> None:
    """ServiceMonitor scrapes the metrics port; every alert uses metrics the forwarder exports."""
    objects = render_chart(
        CHART,
        {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}},
    )
    monitor = _kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    groups = _kind(objects, "PrometheusRule")["spec"]["groups"]
    alerts = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    assert {"KernelCriticalRecord", "KmsgForwarderRecordsLost", "KmsgForwarderSinkNotDelivering",
            "KmsgForwarderDown"} <= set(alerts)  # fmt: skip
    assert 'level=~"emerg|alert|crit"' in alerts["KernelCriticalRecord"]
    exported = _exported_series_names()
    for alert, expr in alerts.items():
        for metric in re.findall(r"kmsg_forwarder_\w+", expr):
            assert metric in exported, f"{alert} uses {metric}, which the forwarder does not export"


KERNEL_EVENT_ALERTS = {
    "KernelOOMKill": 'class="oom_kill"',
    "KernelCrash": 'class=~"kernel_oops|kernel_bug|kernel_panic"',
    "KernelWarning": 'class="kernel_warning"',
    "KernelLockup": 'class=~"soft_lockup|hard_lockup"',
    "KernelRCUStall": 'class="rcu_stall"',
    "KernelHungTask": 'class="hung_task"',
    "KernelFilesystemError": 'class=~"fs_error|fs_readonly"',
    "KernelStorageError": 'class=~"block_io_error|storage_error"',
    "KernelHardwareError": 'class="hw_error", severity!="corrected"',
    "KernelConntrackFull": 'class="conntrack_full"',
}


def _kernel_event_rules(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    objects = render_chart(CHART, {"metrics": {"prometheusRule": {"enabled": True, **values}}})
    groups = _kind(objects, "PrometheusRule")["spec"]["groups"]
    return {
        rule["alert"]: rule
        for group in groups
        if group["name"] == "kmsg-forwarder-kernel-events"
        for rule in group["rules"]
    }


def test_kernel_event_alerts_cover_each_class_with_the_label_values_the_forwarder_uses() -> None:
    """One alert per kernel-event family, on kernel_events_total with class names that exist."""
    rules = _kernel_event_rules({})
    assert set(rules) == set(KERNEL_EVENT_ALERTS)
    exported = _exported_series_names()
    for alert, selector in KERNEL_EVENT_ALERTS.items():
        expr = rules[alert]["expr"]
        assert (
            f'kmsg_forwarder_kernel_events_total{{job="kmsg-kmsg-forwarder", {selector}}}' in expr
        )
        assert "[10m]" in expr
        assert "offset 10m" in expr  # a series born inside the window fires too
        assert set(re.findall(r"kmsg_forwarder_\w+", expr)) <= exported
        for class_name in re.findall(r"[a-z_]+", selector.split('"')[1]):
            assert class_name in CLASSES
        assert rules[alert]["labels"]["severity"] in {"warning", "critical"}
        assert "{{ $labels.node }}" in rules[alert]["annotations"]["summary"]


def test_kernel_event_alerts_follow_their_values() -> None:
    """KernelEventWindow sets the window; kernelEvents = false leaves the kernel-event group out."""
    assert "[30m]" in _kernel_event_rules({"kernelEventWindow": "30m"})["KernelOOMKill"]["expr"]
    assert _kernel_event_rules({"kernelEvents": False}) == {}


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"privileged": True},
        {"secretMounts": [{"name": "s", "secretName": "s", "mountPath": "/s"}]},
    ],
    ids=["defaults", "privileged", "secret-mounts"],
)
def test_rendered_objects_match_the_kubernetes_api_schema(values: dict[str, Any]) -> None:
    """Every built-in object Helm renders validates strictly against the Kubernetes OpenAPI schema."""
    objects = render_chart(CHART, {**values, "metrics": {"serviceMonitor": {"enabled": True}}})
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: kubernetes-validate has no schema for them
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 4


def _value_paths(values: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """Every key path in ``values``, mapped to whether it is a leaf."""
    paths = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        nested = isinstance(value, dict) and bool(value)
        paths[path] = not nested
        if nested:
            paths |= _value_paths(value, path + ".")
    return paths


def test_readme_values_table_matches_values_yaml() -> None:
    """Every value is documented in the README table (itself or a parent), and no row is stale."""
    readme = (CHART.parents[1] / "README.md").read_text()
    # Only the Helm chart's own section: other README tables document config keys and metrics.
    section = readme.split("### Helm chart", 1)[1]
    section = re.split(r"^##+ ", section, maxsplit=1, flags=re.MULTILINE)[0]
    rows = re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, re.MULTILINE)
    assert rows, "no Helm values table in README.md"
    paths = _value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    for path in [path for path, leaf in paths.items() if leaf]:
        parts = path.split(".")
        documented = {".".join(parts[:depth]) for depth in range(1, len(parts) + 1)}
        assert documented & set(rows), f"values.yaml key {path} is missing from the README table"
    assert not set(rows) - set(paths), f"README documents unknown values {set(rows) - set(paths)}"


def test_kernel_events_options_reach_the_forwarder_config(tmp_path: Path) -> None:
    """config.kernel_events (classes off, a user rule) renders to a config check accepts."""
    rule = {"class": "nfs_timeout", "regex": r"nfs: server (?P<server>\S+) not responding"}
    values = {"config": {"kernel_events": {"disabled_classes": ["usb_device"], "rules": [rule]}}}
    objects = render_chart(CHART, values)
    effective = forwarder_check(_config_text(objects), tmp_path, NODE_NAME="n")
    assert effective["kernel_events"]["disabled_classes"] == ["usb_device"]
    assert effective["kernel_events"]["rules"][0]["class"] == "nfs_timeout"
