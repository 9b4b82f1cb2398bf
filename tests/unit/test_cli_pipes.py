"""The CLI as a shell pipeline uses it: a reader that stops early, arguments out of range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mountfs import cli


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`mountfs status | head -3`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "MOUNTFS_RUNTIME_DIR": str(tmp_path / "run")}
    try:
        done = subprocess.run([sys.executable, "-m", "mountfs", "status"], stdout=write_end,
                              stderr=subprocess.PIPE, env=env, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert done.stderr == b"" and done.returncode == 1, done.stderr.decode()


@pytest.mark.parametrize(("jobs", "message"), [("0", "at least 1"), ("-1", "at least 1"), ("x", "got 'x'")])
def test_warm_refuses_fewer_than_one_job(tmp_path: Path, jobs: str, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["warm", "-j", jobs, str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument -j/--jobs" in err and message in err, err
