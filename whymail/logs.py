"""Structured logging: JSON lines in production, readable lines in `--dev`."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path

import orjson

from whymail.config import LoggingConfig

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, component, msg, extra fields, exc."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "component": self._component,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(
    config: LoggingConfig, *, component: str, dev: bool = False, log_file: Path | None = None
) -> None:
    """Configure the root logger of this process (idempotent); JSON lines also go to `log_file`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_whymail", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._whymail = True  # type: ignore[attr-defined]
    if dev or not config.json_format:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(component))
    root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        file_handler._whymail = True  # type: ignore[attr-defined]
        file_handler.setFormatter(JsonFormatter(component))
        root.addHandler(file_handler)
    root.setLevel("DEBUG" if dev and config.level == "INFO" else config.level)
    for noisy in ("mail.log", "aiosmtpd", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
