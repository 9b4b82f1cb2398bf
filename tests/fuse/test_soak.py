"""`make soak` in miniature: a few seconds of readers and writers on the three stores, so the soak's
code keeps working (the real run is minutes long and not part of `make test`)."""

from __future__ import annotations

from pathlib import Path

from tests.reliability import soak
from tests.servers import Emulator, S3Server


def test_a_short_soak_checks_every_byte_and_writes_its_row(seaweedfs: S3Server, fake_gcs: Emulator,
                                                            azurite: Emulator, tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    settings = soak.Settings(seconds=3, readers=3, writers=2, workdir=str(tmp_path / "work"), report=report,
                             command="make soak SOAK_S=3", sample_every=1.0)
    result = soak.run(settings, seaweedfs, fake_gcs, azurite)
    assert result.ok, result.failures
    figures = result.figures
    assert isinstance(figures["operations"], int) and figures["operations"] > 0
    assert isinstance(figures["bytes verified (stores at end)"], int)
    assert figures["bytes verified (stores at end)"] > 0
    assert figures["wrong bytes"] == 0 and figures["acknowledged bytes lost"] == 0
    assert figures["errors by errno (unexpected)"] == "none"
    assert figures["RSS MiB"] != "none"
    row = [line for line in report.read_text().splitlines() if line.startswith("| soak |")]
    assert len(row) == 1 and "`make soak SOAK_S=3`" in row[0] and "wrong bytes: 0" in row[0]
