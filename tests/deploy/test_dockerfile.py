"""The Dockerfile, read as data (no engine here): small, non-root, CAP_SYSLOG, healthy."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, forwarder_check

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _one(stage: list[tuple[str, str]], keyword: str) -> str:
    (value,) = [rest for kw, rest in stage if kw == keyword]
    return value


def test_multi_stage_slim_build_without_compilers() -> None:
    """Two stages on a slim Python base; only wheels are installed; the runtime installs no packages."""
    instructions = _instructions()
    bases = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(bases) >= 2
    assert all(re.match(r"python:\$\{PYTHON_VERSION\}-slim", base) for base in bases)
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert runs.count("--only-binary=:all:") >= 2
    final_runs = " ".join(rest for keyword, rest in _final_stage() if keyword == "RUN")
    for forbidden in ("apt-get", "gcc", "build-essential", "pip install"):
        assert forbidden not in final_runs


def test_runs_as_a_fixed_non_root_user() -> None:
    """The image's USER is a numeric non-root uid (so hostPath dirs can be chowned to it)."""
    user = _one(_final_stage(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0


def test_entrypoint_state_volume_and_default_config(tmp_path: Path) -> None:
    """kmsg-forwarder is the entrypoint; its default config passes check and keeps state in the VOLUME."""
    stage = _final_stage()
    assert json.loads(_one(stage, "ENTRYPOINT")) == ["kmsg-forwarder"]
    command = json.loads(_one(stage, "CMD"))
    config_target = command[command.index("--config") + 1]
    copy = next(r for kw, r in stage if kw == "COPY" and r.endswith(config_target))
    effective = forwarder_check((ROOT / copy.split()[0]).read_text(), tmp_path)
    assert json.loads(_one(stage, "VOLUME")) == [effective["state_dir"]]
    port = effective["metrics"]["listen"].rpartition(":")[2]
    assert _one(stage, "EXPOSE") == port
    healthcheck = _one(stage, "HEALTHCHECK")
    assert f"127.0.0.1:{port}/healthz" in healthcheck
    # The check must not use the capability-carrying interpreter (exec fails without SYSLOG).
    assert "/usr/local/bin/python3" in healthcheck


def test_oci_labels() -> None:
    """The image carries the OCI annotations registries and scanners read."""
    labels = " ".join(rest for keyword, rest in _final_stage() if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_build_context_keeps_what_copy_needs() -> None:
    """.dockerignore lets through every path the Dockerfile copies from the build context."""
    patterns = (ROOT / ".dockerignore").read_text().split()
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for keyword, rest in _instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in shlex.split(rest)[:-1]:
                assert any(
                    source.rstrip("/") == a or source.startswith(a + "/") for a in allowed
                ), source
                assert (ROOT / source).exists()


@pytest.mark.skipif(
    os.geteuid() != 0, reason="writing security.capability needs root (CAP_SETFCAP)"
)
@pytest.mark.skipif(shutil.which("getcap") is None, reason="getcap (libcap2-bin) is not installed")
def test_file_capability_is_exactly_cap_syslog(tmp_path: Path) -> None:
    """The Dockerfile's raw xattr gives the interpreter cap_syslog=ep, as getcap reads it."""
    run = next(r for kw, r in _final_stage() if kw == "RUN" and "security.capability" in r)
    code = shlex.split(run)[-1]
    target = tmp_path / "python3"
    target.write_bytes(b"")
    subprocess.run(
        [sys.executable, "-c", code.replace("/opt/venv/bin/python3", str(target))], check=True
    )
    output = subprocess.run(
        ["getcap", str(target)], capture_output=True, text=True, check=True
    ).stdout
    assert output.split()[-1] == "cap_syslog=ep"
