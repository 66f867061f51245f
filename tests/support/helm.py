"""Helm's real engine (the ``helm-sdkpy`` wheel) driven from tests: lint and render.

Lint runs with no cluster. Rendering has no client-only mode in helm-sdkpy, so
:func:`render_chart` runs Helm's *install* action against a loopback stand-in for the
Kubernetes API: it answers discovery for the kinds the chart uses, says every object is
new, and records what Helm creates. Helm itself loads the chart, validates the values
against ``values.schema.json``, renders every template and parses the output; the
manifest it returns is exactly what a real ``helm install`` would apply.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

# (group version, plural, kind, namespaced) for every kind the chart may render.
API_RESOURCES = [
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "secrets", "Secret", True),
    ("v1", "services", "Service", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("v1", "namespaces", "Namespace", False),
    ("apps/v1", "daemonsets", "DaemonSet", True),
    ("monitoring.coreos.com/v1", "servicemonitors", "ServiceMonitor", True),
    ("monitoring.coreos.com/v1", "prometheusrules", "PrometheusRule", True),
]

LINT_ERROR = 3  # helm's support.ErrorSev


def helm_sdkpy() -> Any:
    """Import helm_sdkpy, or skip with the reason (``make helm-lib`` installs it)."""
    try:
        import helm_sdkpy  # noqa: PLC0415 - optional engine, imported where used
    except ImportError as error:  # pragma: no cover - depends on the machine
        pytest.skip(f"helm-sdkpy is not installed (run `make helm-lib`): {error}")
    return helm_sdkpy


def lint_errors(chart: Path) -> list[str]:
    """Paths (``values.yaml``, ``templates/``...) for which ``helm lint`` reports an error.

    helm-sdkpy serialises lint messages without their text, so only the path and the
    severity survive; :func:`render_chart` gives the words.
    """
    helm = helm_sdkpy()
    result = asyncio.run(helm.Lint(helm.Configuration()).run(str(chart)))
    messages = result.get("Messages") or []
    errors = [message["Path"] for message in messages if message["Severity"] >= LINT_ERROR]
    if result.get("Errors") and not errors:
        errors.append("(unknown)")
    return errors


def render_chart(
    chart: Path, values: dict[str, Any] | None = None, *, release: str = "kmsg"
) -> list[dict[str, Any]]:
    """Render ``chart`` with Helm's install action and return its objects.

    Raises ``helm_sdkpy.InstallError`` with Helm's own message when the values break the
    schema or a template fails.
    """
    helm = helm_sdkpy()
    with _fake_kube_api() as kubeconfig:
        config = helm.Configuration(namespace="monitoring", kubeconfig=kubeconfig)
        release_info = asyncio.run(
            helm.Install(config).run(release, str(chart), values=values or {}, wait=False)
        )
    documents = yaml.safe_load_all(release_info["manifest"])
    return [document for document in documents if document]


@contextmanager
def _fake_kube_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubeApiHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _kubeconfig(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _kubeconfig(server: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
    )


class _KubeApiHandler(BaseHTTPRequestHandler):
    """Discovery, 'not found' for every object, and 'created' for every write."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/version":
            self._reply(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
        elif path == "/api":
            self._reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        elif path == "/apis":
            self._reply(200, _group_list())
        elif (resources := _resource_list(path)) is not None:
            self._reply(200, resources)
        elif path.endswith("/secrets") and "owner%3Dhelm" in self.path:
            self._reply(200, {"kind": "SecretList", "apiVersion": "v1", "items": []})
        else:
            self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "NotFound", "code": 404, "message": "not found"})  # fmt: skip

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            created = json.loads(body)
        except ValueError:
            # Helm stores its release record as a protobuf Secret; echo a stub.
            created = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}}
        self._reply(201, created)

    do_PUT = do_POST  # noqa: N815 - the name http.server dispatches PUT to

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature
        """Stay quiet: pytest shows failures, not the request log."""

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _group_list() -> dict[str, Any]:
    versions = sorted({gv for gv, *_ in API_RESOURCES if "/" in gv})
    groups = [
        {
            "name": gv.split("/")[0],
            "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
            "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
        }
        for gv in versions
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource_list(path: str) -> dict[str, Any] | None:
    group_version = path.removeprefix("/api/").removeprefix("/apis/")
    if path not in (f"/api/{group_version}", f"/apis/{group_version}"):
        return None
    resources = [
        {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
         "verbs": ["create", "get", "list", "update", "delete"]}
        for gv, plural, kind, namespaced in API_RESOURCES
        if gv == group_version
    ]  # fmt: skip
    if not resources:
        return None
    return {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}
