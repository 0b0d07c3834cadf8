"""Logging: one `voxpop.*` hierarchy, and JSON lines when asked."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from services.logs import JsonFormatter, configure_logging

ROOT = Path(__file__).resolve().parents[2]


def test_every_project_logger_is_under_voxpop() -> None:
    names = re.compile(r"getLogger\(([^)]*)\)")
    wrong = []
    for pkg in ("services", "pipelines", "models", "infra"):
        for f in (ROOT / pkg).rglob("*.py"):
            for arg in names.findall(f.read_text()):
                if arg and not arg.startswith('"voxpop') and arg not in ("noisy", '"kafka"'):
                    wrong.append(f"{f.relative_to(ROOT)}: getLogger({arg})")
    assert not wrong, wrong


def test_json_lines_carry_level_logger_message_and_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("voxpop.scorer", logging.ERROR, __file__, 1, "batch %d failed", (7,), sys.exc_info())
    line = JsonFormatter().format(rec)
    out = json.loads(line)
    assert (out["level"], out["logger"], out["message"]) == ("ERROR", "voxpop.scorer", "batch 7 failed")
    assert "ValueError: boom" in out["exception"] and out["time"].endswith("+00:00")
    assert "\n" not in line


def test_configure_logging_picks_the_format() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        for fmt, kind in (("json", JsonFormatter), ("text", logging.Formatter)):
            root.handlers = []
            configure_logging("info", fmt)
            assert type(root.handlers[-1].formatter) is kind
    finally:
        root.handlers = saved
