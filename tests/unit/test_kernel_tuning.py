"""The kernel settings a root mount raises, against a stand-in for fusectl's folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mountfs.kernel_tuning import connection_dir, raise_background_requests


def test_the_connection_folder_is_named_by_the_kernels_device_number() -> None:
    assert connection_dir(os.makedev(0, 57), "/c") == "/c/57"
    assert connection_dir(os.makedev(0, 300), "/c") == "/c/300"  # not st_dev's 0x1 2c encoding
    assert connection_dir(os.makedev(8, 1), "/c") == f"/c/{(8 << 20) | 1}"


def test_background_requests_are_raised_with_congestion_at_three_quarters(tmp_path: Path) -> None:
    device = os.makedev(0, 61)
    folder = tmp_path / "61"
    folder.mkdir()
    for name in ("max_background", "congestion_threshold"):
        (folder / name).write_text("12\n")
    assert raise_background_requests(device, 128, str(tmp_path))
    assert (folder / "max_background").read_text() == "128"
    assert (folder / "congestion_threshold").read_text() == "96"


def test_a_connection_that_cannot_be_tuned_is_left_as_it_is(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mountfs.kernel_tuning"):
        assert not raise_background_requests(os.makedev(0, 62), 128, str(tmp_path))  # no such folder
    assert "left as they are" in caplog.text
