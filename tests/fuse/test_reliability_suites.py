"""The reliability suites (`make crash`, `make chaos`) in miniature, so `make test` keeps them working:
one crash trial, and one short chaos phase, each with its own checks as the full runs make them."""

from __future__ import annotations

from pathlib import Path

from tests.reliability import crash
from tests.servers import S3Server


def test_one_crash_trial_loses_nothing_acknowledged(seaweedfs: S3Server, tmp_path: Path) -> None:
    figures, trials = crash.run(1, seed=7, server=seaweedfs, workdir=str(tmp_path), log=lambda _line: None)
    [trial] = trials
    assert trial.problems == []
    assert figures["bytes lost"] == 0 and figures["wrong bytes"] == 0
    assert figures["uploads left open"] == 0 and figures["staged files left"] == 0
