"""The bench's py-spy summary and CPU-per-unit figures (pure functions: no daemon, no py-spy)."""

from __future__ import annotations

import pytest

from bench.harness import CPU_MS, cpu_per_op
from bench.profile import frame_name, summarize

RUN = "run (trio/_core/_run.py:2010)"
RAW = "\n".join([
    f"{RUN};read (/v/lib/python3.11/site-packages/pyfuse3/__init__.py:40);"
    "_read (mountfs/cache/blocks.py:300) 30",
    f"{RUN};get_events (trio/_core/_io_epoll.py:220) 10",
    "garbage line",
])


def test_frame_names_drop_the_install_prefix_and_line() -> None:
    assert frame_name("_read (/repo/mountfs/cache/blocks.py:300)") == "_read (mountfs/cache/blocks.py)"
    assert frame_name("_read (mountfs/cache/blocks.py:300)") == "_read (mountfs/cache/blocks.py)"
    assert frame_name("read (/v/lib/python3.11/site-packages/pyfuse3/__init__.py:40)") == \
        "read (pyfuse3/__init__.py)"
    assert frame_name("exists (<frozen genericpath>:19)") == "exists (<frozen genericpath>)"


def test_a_summary_counts_own_and_total_time_per_frame() -> None:
    samples, frames = summarize(RAW)
    assert samples == 40
    by_name = {f.name: f for f in frames}
    assert by_name["_read (mountfs/cache/blocks.py)"].own == pytest.approx(0.75)
    assert by_name["get_events (trio/_core/_io_epoll.py)"].own == pytest.approx(0.25)
    assert frames[0].name == "_read (mountfs/cache/blocks.py)"
    assert summarize("") == (0, [])


@pytest.mark.parametrize(("unit", "detail", "expected"), [
    ("MB/s", {"value": 1073.741824, "seconds": 1.0}, (0.5, "s/GiB")),  # 1 GiB moved, 500 ms of CPU
    ("files/s", {"value": 100.0, "seconds": 2.0}, (2.5, "ms/file")),
    ("ops/s", {"value": 1000.0, "seconds": 0.5}, (1000.0, "us/op")),
    ("s", {"value": 2.0, "seconds": 2.0, "files": 1000}, (500.0, "us/file")),
])
def test_cpu_per_unit_of_work(unit: str, detail: dict[str, float], expected: tuple[float, str]) -> None:
    figure = cpu_per_op(unit, {**detail, "counters": {CPU_MS: 500}})
    assert figure is not None
    assert figure[0] == pytest.approx(expected[0]) and figure[1] == expected[1]
    assert cpu_per_op(unit, detail) is None  # no CPU sample: no figure
