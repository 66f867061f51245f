"""Kubernetes context from a memory cgroup path (oom_kill's ``task_memcg``).

kubelet names pod cgroups after the pod UID and its QoS class, and container runtimes
name the container's cgroup after the container ID
(https://kubernetes.io/docs/concepts/architecture/cgroups/). Shapes handled:

* systemd driver (cgroup v1 and v2): ``/kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`` (also ``crio-``,
  ``docker-``); Guaranteed pods sit right under ``kubepods.slice``.
* cgroupfs driver: ``/kubepods/besteffort/pod<uid>/<id>``; Guaranteed pods right under
  ``/kubepods``.
* v1 paths may carry a controller-hierarchy prefix; container IDs are 64 hex digits.
"""

from __future__ import annotations

import re
from typing import Final

_POD: Final = re.compile(
    r"kubepods(?:[-/.](?:slice/)?kubepods)?(?:[-/](?P<qos>burstable|besteffort))?"
    r"(?:\.slice)?[-/](?:kubepods-(?:burstable-|besteffort-)?)?"
    r"pod(?P<uid>[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_]"
    r"[0-9a-fA-F]{12})(?:\.slice)?(?:/(?P<container>[^/]+))?"
)
_CONTAINER: Final = re.compile(
    r"(?:(?P<runtime>cri-containerd|crio|docker)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_RUNTIMES: Final = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}


def kubernetes_context(memcg_path: str) -> dict[str, str] | None:
    """``pod_uid``, ``qos_class`` and, when present, ``container_id``/``container_runtime``.

    None when the path is not under a kubepods hierarchy.
    """
    match = _POD.search(memcg_path)
    if match is None:
        return None
    context = {
        "pod_uid": match["uid"].replace("_", "-").lower(),
        "qos_class": (match["qos"] or "guaranteed").capitalize().replace("effort", "Effort"),
    }
    container = _CONTAINER.match(match["container"] or "")
    if container:
        context["container_id"] = container["id"]
        if container["runtime"]:
            context["container_runtime"] = _RUNTIMES[container["runtime"]]
    return context
