"""JSON log lines on stderr: snake_case event names plus fields; never secrets, signatures or payloads."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

# `color_message` is uvicorn's copy of the message with ANSI colour codes: never in a JSON line.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def _not_a_repeated_connect_failure(record: logging.LogRecord) -> bool:
    """aiormq logs every failed connect before raising it; the caller reports that same error itself
    (the gateway's `broker_connect_failed`, the consumers' one-line start-up error, aio-pika's reconnect
    warning), with the URL's password masked, so aiormq's copy is only a duplicate line."""
    return not record.msg.startswith("error when creating transport")


def setup(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, aio-pika's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, root.level))
    connection = logging.getLogger("aiormq.connection")
    if _not_a_repeated_connect_failure not in connection.filters:
        connection.addFilter(_not_a_repeated_connect_failure)
