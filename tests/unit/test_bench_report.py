"""bench/RESULTS.md comes with its chart: the fleet's with/without-shared-cache rows are charted
beside the peers' ratios, and the markdown links the PNG it was written with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bench import report
from bench.harness import Metric, Run


def _fleet_metric() -> Metric:
    metric = Metric("fleet-origin", "bytes the origin sent", "MB", higher_is_better=False)
    metric.row(report.FLEET_SHARED, "mountfs + shared cache").values.extend([1100.0, 1000.0, 1050.0])
    metric.row(report.FLEET_ALONE, "mountfs, no shared cache").values.extend([3150.0, 3000.0, 3100.0])
    return metric


def _run() -> Run:
    cold = Metric("cold-seq", "cold sequential", "MB/s", higher_is_better=True)
    cold.row("mountfs", "mountfs").values.append(600.0)
    cold.row("rclone", "rclone").values.append(300.0)
    return Run(started="2026-12-04", settings={"scale": "full"}, machine={"date": "2026-12-04"},
               metrics={"cold-seq": cold, "fleet-origin": _fleet_metric()})


def test_the_fleet_ratio_is_without_over_with_the_shared_cache() -> None:
    metric = _fleet_metric()
    assert report._chart_ratio(metric, report.FLEET_ALONE) == pytest.approx(3100.0 / 1050.0)
    assert report._chart_ratio(metric, "rclone") is None  # no mountfs row: not a peer comparison


def test_results_md_links_the_chart_written_beside_it(tmp_path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is in .venv-bench only (make bench)")
    md = tmp_path / "RESULTS.md"
    report.write_results_md(_run(), md, "tables")
    assert (tmp_path / "RESULTS.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![mountfs / tool per measurement](RESULTS.png)" in md.read_text()


def test_without_matplotlib_results_md_links_no_chart(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "write_png", lambda run, path: "matplotlib is not installed: no chart")
    md = tmp_path / "RESULTS.md"
    report.write_results_md(_run(), md, "tables")
    assert "RESULTS.png" not in md.read_text()
    assert not (tmp_path / "RESULTS.png").exists()
