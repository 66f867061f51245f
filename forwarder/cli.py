"""``kmsg-forwarder run|check|status``: the command line.

Each branch of the error tree maps to an exit code and one line a person can act on:
config errors exit 2, start-up problems (device, state dir, checkpoint) exit 3, other
forwarder errors exit 1. The first SIGTERM/SIGINT drains and exits 0; a second one
cuts the drain short and exits 128 + its number once the capture process is ended.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from forwarder.config import Config, load_config
from forwarder.delivery.checkpoint import CheckpointStore
from forwarder.errors import ConfigError, ForwarderError, StartupError
from forwarder.options import as_builtins
from forwarder.server import Server
from forwarder.source.boot import read_boot_id
from forwarder.source.ring import ring_bounds
from forwarder.telemetry.logs import configure_logging

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3
SECRET_KEY_PARTS = ("password", "token", "secret", "api_key")
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/@\s]*@")  # scheme://user:PASSWORD@host


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kmsg-forwarder`` command."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
        if args.command == "check":
            return _check(config)
        if args.command == "status":
            return _status(config)
        return _run(config)
    except ConfigError as error:
        return _fail(EXIT_CONFIG, f"config error: {error}")
    except StartupError as error:
        return _fail(EXIT_STARTUP, f"cannot start: {error}")
    except ForwarderError as error:
        return _fail(EXIT_ERROR, f"error: {error}")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with the terminal's width found without ``shutil``.

    argparse imports shutil (and with it bz2 and lzma: 0.55 MiB of an idle forwarder's memory)
    just to ask for the width, whenever a parser is built; ``os`` answers the same question.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)  # argparse keeps 2 columns free


def _terminal_columns() -> int:
    """``$COLUMNS``, else the terminal's width, else 80 (what shutil.get_terminal_size says)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmsg-forwarder",
        description="Ship the Linux kernel log (/dev/kmsg) with checkpoints and gap reports.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="run", choices=("run", "check", "status"))
    parser.add_argument("--config", "-c", type=Path, help="TOML config file (default: none)")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--log-format", default="auto", choices=("auto", "json", "text"))
    return parser


def _fail(code: int, message: str) -> int:
    print(f"kmsg-forwarder: {message}", file=sys.stderr)
    return code


def _check(config: Config) -> int:
    """Print the effective config with secrets masked."""
    sys.stdout.buffer.write(
        orjson.dumps(_masked(as_builtins(config)), option=orjson.OPT_INDENT_2) + b"\n"
    )
    return EXIT_OK


def _masked(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if key == "headers":  # Authorization, X-Api-Key...: any header may carry a secret
            return dict.fromkeys(value, "***")
        return {
            name: "***" if _is_secret(name) and item is not None else _masked(item, name)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_masked(item, key) for item in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def _is_secret(key: str) -> bool:
    return any(part in key for part in SECRET_KEY_PARTS) and not key.endswith("_file")


def _status(config: Config) -> int:
    """Print the ring bounds, the boot id and each sink's checkpoint and lag as JSON."""
    boot_id = read_boot_id(config.source.boot_id_path)
    oldest, newest = ring_bounds(config.source.path)
    store = CheckpointStore(config.state_dir)
    sinks: dict[str, Any] = {}
    for name in config.sinks:
        checkpoint = store.load(name)
        entry: dict[str, Any] = {"checkpoint": None}
        if checkpoint is not None:
            entry["checkpoint"] = {
                "boot_id": checkpoint.boot_id,
                "seq": checkpoint.seq,
                "updated_at": checkpoint.updated_at,
            }
            if checkpoint.boot_id == boot_id and newest is not None:
                entry["lag_records"] = max(0, newest - checkpoint.seq)
                if oldest is not None and oldest > checkpoint.seq + 1:
                    entry["gap"] = {"first_seq": checkpoint.seq + 1, "last_seq": oldest - 1}
            elif checkpoint.boot_id != boot_id:
                entry["gap"] = {"reason": "reboot", "old_boot_id": checkpoint.boot_id}
        sinks[name] = entry
    report = {"boot_id": boot_id, "ring": {"oldest_seq": oldest, "newest_seq": newest}}
    report["sinks"] = sinks
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return EXIT_OK


def _run(config: Config) -> int:
    server = Server(config)
    server.prepare()
    try:
        return server.run()
    except StartupError as error:
        if server.started_reading:
            # e.g. a checkpoint that can no longer be written: a runtime failure.
            raise ForwarderError(f"stopped: {error}") from error
        raise


if __name__ == "__main__":
    sys.exit(main())
