"""The RELIABILITY.md table: a row per scenario, replaced by the next run of the same scenario."""

import datetime
import subprocess
from pathlib import Path

from tests.reliability.report import _commit, record

WHEN = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def test_a_run_replaces_its_own_row_and_keeps_the_others(tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    record("soak", "make soak", {"operations": 12000, "wrong bytes": 0}, report, WHEN, "abc1234")
    record("chaos: resets", "make chaos", {"wrong bytes": 0, "recovered in s": 1.5}, report, WHEN, "abc1234")
    record("soak", "make soak SOAK_S=60", {"operations": 300, "wrong bytes": 0}, report, WHEN, "def5678")
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "scenario" not in line]
    assert rows == [
        "| chaos: resets | `make chaos` | wrong bytes: 0; recovered in s: 1.50 "
        "| 2026-12-03 12:00 UTC | abc1234 |",
        "| soak | `make soak SOAK_S=60` | operations: 300; wrong bytes: 0 | 2026-12-03 12:00 UTC | def5678 |",
    ]
    assert text.startswith("# Reliability\n")


def test_a_pipe_in_a_figure_does_not_break_the_table(tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    row = record("fuzz", "make fuzz", {"errors": "EIO|ENOENT"}, report, WHEN, "x")
    assert row.count(" | ") == 4 and "EIO\\|ENOENT" in row


def test_the_commit_is_dirty_for_a_changed_file_but_not_for_the_table_itself(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                               *args], capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "RELIABILITY.md").write_text("table\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "RELIABILITY.md").write_text("table\nrow\n")  # the phase before wrote its row
    assert _commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert _commit(tmp_path) == head + "-dirty"
