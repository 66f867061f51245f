"""Shared helpers for the deployment tests: paths and the real ``kmsg-forwarder check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kmsg-forwarder"


def forwarder_check(config_text: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    """Run ``kmsg-forwarder check --config`` on ``config_text``; return the effective config.

    Fails the test with the command's own message when the config is refused.
    """
    config = tmp_path / "config.toml"
    config.write_text(config_text, encoding="utf-8")
    command = Path(sys.executable).parent / "kmsg-forwarder"
    result = subprocess.run(
        [str(command), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, f"kmsg-forwarder check refused:\n{config_text}\n{result.stderr}"
    effective: dict[str, Any] = json.loads(result.stdout)
    return effective
