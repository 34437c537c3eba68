"""Structured logs: one JSON object per line on stderr, with the fields a record carries.

Call sites pass fields as ``logger.info("rpc", extra={"fields": {...}})``; every line gets the
time, level, logger, message, pid and worker index.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int = 0):
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
            "pid": os.getpid(), "worker": self.worker, **getattr(record, "fields", {}),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO", worker: int = 0) -> None:
    """Send the ``recsys`` loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("recsys")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker))
    logger.addHandler(handler)
