"""structlog setup: JSON lines in the daemon, readable lines on a terminal; secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from service.secrets import redact_text

SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api_?key|authorization|cookie", re.I)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if SECRET_KEYS.search(key) and value is not None:
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is *now* (it may be swapped, e.g. by
    test capture or a daemon manager), not the stream current at setup."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*_: Any) -> _StderrLogger:
    return _StderrLogger()


def setup_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and stdlib logging once per process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # before redact: tracebacks hold URLs too
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
