"""``kmsg-forwarder run|check|status|spool check``: the command line.

Each branch of the error tree maps to an exit code and one line a person can act on:
config errors exit 2, start-up problems (device, state dir, checkpoint) exit 3, other
forwarder errors exit 1; ``spool check`` exits 4 when a spool file is damaged. The first
SIGTERM/SIGINT drains and exits 0; a second one cuts the drain short and exits 128 + its
number once the capture process is ended.
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
from forwarder.spool.check import SpoolReport, inspect_spool
from forwarder.telemetry.logs import configure_logging

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_SPOOL_DAMAGED = 4
SECRET_KEY_PARTS = ("password", "token", "secret", "api_key")
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/@\s]*@")  # scheme://user:PASSWORD@host


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kmsg-forwarder`` command."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
        return _command(args, config)
    except ConfigError as error:
        return _fail(EXIT_CONFIG, f"config error: {error}")
    except StartupError as error:
        return _fail(EXIT_STARTUP, f"cannot start: {error}")
    except ForwarderError as error:
        return _fail(EXIT_ERROR, f"error: {error}")


def _command(args: argparse.Namespace, config: Config) -> int:
    if (args.command == "spool") != (args.action is not None) or args.action not in {
        None,
        "check",
    }:
        return _fail(EXIT_CONFIG, "usage: kmsg-forwarder [run|check|status|spool check]")
    commands = {"check": _check, "status": _status, "spool": _spool_check, "run": _run}
    return commands[args.command](config)


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
    parser.add_argument(
        "command", nargs="?", default="run", choices=("run", "check", "status", "spool")
    )
    parser.add_argument("action", nargs="?", help="with 'spool': check")
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
    spool = inspect_spool(config.spool_path, verify=False) if config.spool.enabled else None
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
        if checkpoint is not None and spool is not None:
            entry["spool_lag_records"] = _spool_lag(spool, checkpoint.boot_id, checkpoint.seq)
        sinks[name] = entry
    report: dict[str, Any] = {
        "boot_id": boot_id,
        "ring": {"oldest_seq": oldest, "newest_seq": newest},
    }
    if spool is not None:
        report["spool"] = {**spool.as_json(), "max_bytes": config.spool.max_bytes}
    report["sinks"] = sinks
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return EXIT_OK


def _spool_lag(spool: SpoolReport, boot_id: str, seq: int) -> int | None:
    """Records the spool holds after (boot_id, seq): what the sink still has to send."""
    lag = 0
    counting = False
    for boot in spool.boots:
        if boot.newest_seq is None:
            continue
        if boot.boot_id == boot_id:
            counting = True
            lag += max(0, boot.newest_seq - max(seq, (boot.oldest_seq or 0) - 1))
        elif counting:
            lag += boot.newest_seq - (boot.oldest_seq or 0) + 1
    return lag if counting else None


def _spool_check(config: Config) -> int:
    """Verify every checksum of the spool; print what it holds; exit 4 on damage."""
    report = inspect_spool(config.spool_path, verify=True)
    sys.stdout.buffer.write(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2) + b"\n")
    if report.damaged:
        problems = report.damage + [d for boot in report.boots for d in boot.damage]
        return _fail(
            EXIT_SPOOL_DAMAGED,
            f"spool {config.spool_path} is damaged ({len(problems)} problems: "
            f"{problems[0]}); the forwarder quarantines or cuts these at its next start",
        )
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
