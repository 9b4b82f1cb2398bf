"""RELIABILITY.md: one table, a row per scenario, written by the suites that measured it, never by hand.

Each suite calls `record()` at the end of its run with its own figures; a row of another scenario is
left as it is, so the table always shows the last run of each, with its date and commit.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "RELIABILITY.md"
HEADER = """# Reliability

Written by the suites themselves (`tests/reliability/report.py`), never by hand: each row is the last
run of its scenario, with the figures it measured, the date and the commit it ran on.

| scenario | command | figures | date | commit |
|---|---|---|---|---|
"""


def _commit(root: Path = ROOT) -> str:
    """HEAD, with "-dirty" when a file differs from it; the table itself does not count (the
    suites change it as they run: the first of several chaos phases made the others dirty)."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                  "--", ".", f":(exclude){REPORT.name}"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if changed else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_figures(figures: Mapping[str, object]) -> str:
    """`name: value; name: value`, in the order given (ints with thousands separators)."""
    def show(value: object) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.2f}"
        return str(value)
    return "; ".join(f"{name}: {show(value)}" for name, value in figures.items())


def record(scenario: str, command: str, figures: Mapping[str, object], path: Path = REPORT,
           when: datetime.datetime | None = None, commit: str | None = None) -> str:
    """Write (or replace) the row of `scenario` in `path`; return the row written."""
    when = when or datetime.datetime.now(datetime.UTC)
    row = (f"| {_cell(scenario)} | `{_cell(command)}` | {_cell(format_figures(figures))} "
           f"| {when:%Y-%m-%d %H:%M} UTC | {_cell(commit or _commit())} |\n")
    path.touch(exist_ok=True)
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two suites finishing at once each keep their row
        lines = f.read().splitlines(keepends=True)
        rows = [line for line in lines
                if line.startswith("| ") and not line.startswith(("| scenario ", "|---"))]
        rows = [line for line in rows if line.split("|")[1].strip() != _cell(scenario)]
        rows.append(row)
        rows.sort(key=lambda line: line.split("|")[1].strip())
        f.seek(0)
        f.truncate()
        f.write(HEADER + "".join(rows))
        f.flush()
        os.fsync(f.fileno())
    return row
