"""Latency histograms kept as plain counts, by the layers that time their calls (FUSE handlers, store
requests), without knowing who reads them: the metrics endpoint copies them on the event loop's
thread and turns them into Prometheus histograms."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Upper bounds in seconds: from a cached FUSE answer (tens of microseconds) to a store call that
# rides out its retries (tens of seconds).
BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
)  # fmt: skip


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))  # the last: above all
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count at or below it) pairs, "+Inf" last, as Prometheus writes them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, BOUNDS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.total)


class Latencies:
    """One histogram per label (an operation's name: a bounded set)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Histogram] = {}

    def observe(self, name: str, seconds: float) -> None:
        histogram = self.by_name.get(name)
        if histogram is None:
            histogram = self.by_name[name] = Histogram()
        histogram.observe(seconds)

    def snapshot(self) -> dict[str, Histogram]:
        return {name: h.copy() for name, h in list(self.by_name.items())}
