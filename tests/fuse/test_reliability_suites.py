"""The reliability suites (`make crash`, `make chaos`) in miniature, so `make test` keeps them working:
one crash trial, and one short chaos phase, each with its own checks as the full runs make them."""

from __future__ import annotations

from pathlib import Path

from tests.reliability import chaos, crash
from tests.servers import S3Server


def test_one_crash_trial_loses_nothing_acknowledged(seaweedfs: S3Server, tmp_path: Path) -> None:
    figures, trials = crash.run(1, seed=7, server=seaweedfs, workdir=str(tmp_path), log=lambda _line: None)
    [trial] = trials
    assert trial.problems == []
    assert figures["bytes lost"] == 0 and figures["wrong bytes"] == 0
    assert figures["uploads left open"] == 0 and figures["staged files left"] == 0


def test_one_short_chaos_phase_reads_right_and_keeps_acknowledged_writes(seaweedfs: S3Server,
                                                                       tmp_path: Path) -> None:
    settings = chaos.Settings(before=1.0, during=2.0, after=0.5, recover_limit=60.0)
    [result] = chaos.run(["resets"], settings, seed=3, server=seaweedfs, workdir=str(tmp_path),
                         log=lambda _line: None)
    assert result.problems == []
    assert result.figures["wrong bytes"] == 0 and result.figures["bytes lost"] == 0
    assert result.figures["hung calls"] == 0 and result.figures["recovery s"] != "never"
