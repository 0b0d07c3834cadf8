"""The README's and docs' `voxpop` commands are commands that exist, with options they take, and
the watches they name are the ones `./dev up` creates (a reader copies them as written).

Templates are read as a reader reads them: `[...]` is optional (checked when present),
`a|b` offers alternatives (each checked), `...`, `<name>` and upper-case words are placeholders.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from services.cli import app as cli_app
from services.storage.watches import AIRLINES

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
_SPAN = re.compile(r"`((?:\.venv/bin/)?voxpop [^`]+)`")
_LINE = re.compile(r"^\s*(?:\$ )?((?:\.venv/bin/)?voxpop .+)$")


def _commands(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of every `voxpop ...` in a code span or a code line of `page`."""
    out: list[tuple[int, str]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line, no = lines[i], i + 1
        while line.endswith("\\") and i + 1 < len(lines):  # shell continuation lines
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        m = _LINE.match(line)
        if m and "`" not in line and "|" not in line.split("#")[0].strip()[:1]:
            out.append((no, m.group(1).split(" #")[0].strip()))
        else:
            out += [(no, c.replace("\\|", "|")) for c in _SPAN.findall(line)]
        i += 1
    return out


def _check(where: str, command: str) -> None:
    """Resolve the command path (each of `a|b`), then every `--option` and `--watch NAME` in it."""
    words = [w for w in shlex.split(re.sub(r"[\[\]]", " ", command).split("->")[0])[1:] if w not in ("|", "...")]
    groups: list[Any] = [typer.main.get_command(cli_app)]  # typer vendors its own click
    i = 0
    while i < len(words) and all(hasattr(g, "commands") for g in groups) and not words[i].startswith("-"):
        if words[i].startswith("<"):  # `voxpop ingest <name>`: a placeholder command
            return
        names, nxt = words[i].split("|"), []
        for g in groups:
            for n in names:
                sub = g.commands.get(n)
                assert sub is not None, f"{where}: `{command}`: no command {n!r} (have {sorted(g.commands)})"
                nxt.append(sub)
        groups, i = nxt, i + 1
    rest = words[i:]
    for cmd in groups:
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for j, w in enumerate(rest):
            for opt in (a.split("=")[0] for a in w.split("|") if a.startswith("--")):
                assert opt in known, f"{where}: `{command}`: no option {opt} of {cmd.name} ({sorted(known)})"
                if opt == "--watch":
                    name = rest[j + 1]
                    assert name in AIRLINES, (
                        f"{where}: `{command}`: watch {name!r}; `./dev up` creates {list(AIRLINES)}"
                    )


CASES = [(f"{p.name}:{no}", c) for p in PAGES for no, c in _commands(p)]


def test_the_pages_have_commands() -> None:
    assert len(CASES) > 60 and any("report --watch" in c for _, c in CASES)


@pytest.mark.parametrize(("where", "command"), CASES, ids=[w for w, _ in CASES])
def test_documented_command_exists(where: str, command: str) -> None:
    _check(where, command)


def test_the_check_can_fail() -> None:
    for bad in ("voxpop report --watch Delta", "voxpop reports --watch JetBlue", "voxpop dlq show --all"):
        with pytest.raises(AssertionError):
            _check("here", bad)
