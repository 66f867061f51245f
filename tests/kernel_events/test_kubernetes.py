"""Pod UID, container ID, runtime and QoS class from kubepods memory cgroup paths."""

from __future__ import annotations

import pytest

from forwarder.kernel_events.kubernetes import kubernetes_context
from tests.kernel_events.support import kmsg, run

UID = "94eb36cd-29e1-478b-b365-4cb5dfc7d6fb"
SYSTEMD_UID = UID.replace("-", "_")
CID = "46b3e0a4df44b752b841aecca454e6e78995d567912a84950390bae6f6777a63"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (  # cgroup v2 or v1, systemd driver, containerd
            (
                f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}"
                f".slice/cri-containerd-{CID}.scope"
            ),
            {"pod_uid": UID, "qos_class": "Burstable", "container_id": CID,
             "container_runtime": "containerd"},
        ),
        (  # systemd driver, CRI-O, Guaranteed pod right under kubepods.slice
            f"/kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/crio-{CID}.scope",
            {"pod_uid": UID, "qos_class": "Guaranteed", "container_id": CID,
             "container_runtime": "cri-o"},
        ),
        (  # systemd driver, docker (dockershim / cri-dockerd)
            (
                f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}"
                f".slice/docker-{CID}.scope"
            ),
            {"pod_uid": UID, "qos_class": "BestEffort", "container_id": CID,
             "container_runtime": "docker"},
        ),
        (  # cgroupfs driver: the container directory is the bare ID
            f"/kubepods/besteffort/pod{UID}/{CID}",
            {"pod_uid": UID, "qos_class": "BestEffort", "container_id": CID},
        ),
        (  # cgroupfs driver, Guaranteed
            f"/kubepods/pod{UID}/{CID}",
            {"pod_uid": UID, "qos_class": "Guaranteed", "container_id": CID},
        ),
        (  # v1 path under a controller hierarchy, burstable, pod level only
            f"/sys/fs/cgroup/memory/kubepods/burstable/pod{UID}",
            {"pod_uid": UID, "qos_class": "Burstable"},
        ),
        (  # the pod's sandbox (pause) container is a container too
            f"/kubepods/burstable/pod{UID}/crio-{CID}",
            {"pod_uid": UID, "qos_class": "Burstable", "container_id": CID,
             "container_runtime": "cri-o"},
        ),
    ],
)  # fmt: skip
def test_kubepods_paths(path: str, expected: dict[str, str]) -> None:
    """Every cgroup driver, cgroup version and runtime prefix names the pod and container."""
    assert kubernetes_context(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/", "/system.slice/docker.service", f"/user.slice/pod{UID}", "/kubepods/burstable", ""],
)
def test_non_kubernetes_paths(path: str) -> None:
    """Paths outside a kubepods hierarchy have no Kubernetes context."""
    assert kubernetes_context(path) is None


def test_oom_kill_event_names_the_pod() -> None:
    """An OOM kill inside a container carries the pod and container of task_memcg."""
    memcg = f"/kubepods/burstable/pod{UID}/{CID}"
    records = [
        kmsg(1, f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={CID},"
                f"mems_allowed=0,oom_memcg=/kubepods/burstable/pod{UID},task_memcg={memcg},"
                "task=child,pid=42,uid=1000", level=6),
        kmsg(2, "Memory cgroup out of memory: Killed process 42 (child) total-vm:1kB, "
                "anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:1kB "
                "oom_score_adj:999", level=3),
    ]  # fmt: skip
    (event,) = run(records)
    assert event["fields"]["kubernetes"] == {
        "pod_uid": UID,
        "qos_class": "Burstable",
        "container_id": CID,
    }
    assert event["fields"]["comm"] == "child"
    assert event["fields"]["scope"] == "memcg"
