"""Process logging: one format for every `voxpop` process, and the chatty libraries kept quiet.

Every VoxPop logger sits under ``voxpop`` (``voxpop.scorer``, ``voxpop.ingest.jetstream``, ...), so
one level or handler covers the whole project. ``VOXPOP_LOG_FORMAT=json`` writes one JSON object
per line (what k8s log collectors parse without a regex); the default is one readable line.

httpx logs every request with its full URL at INFO; webhook URLs carry tokens (Slack-style
`/services/T../B../secret`), so it stays at WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

QUIET = ("kafka", "aiokafka", "httpx", "httpcore", "urllib3")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str, fmt: str | None = None) -> None:
    """Configure the root logger once per process; `fmt` is "text" or "json" (None: the setting)."""
    if fmt is None:
        from services.config import get_settings

        fmt = get_settings().log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
