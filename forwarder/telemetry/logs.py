"""The forwarder's own logs: structured (structlog), on stderr, never on /dev/kmsg.

JSON lines by default when stderr is not a terminal, readable text on a terminal; stdout
is reserved for the stdout sink's events.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "text", "auto"]


def configure_logging(level: str = "info", log_format: LogFormat = "auto") -> None:
    """Route structlog (and stdlib logging of libraries) to stderr in the chosen format."""
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(numeric_level, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s"
    )
