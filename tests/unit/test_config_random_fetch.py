"""[read] random_fetch: what a read at random fetches; a power of two, whole chunks, at most a block."""

from __future__ import annotations

from pathlib import Path

import pytest

from mountfs.config import load_config
from mountfs.errors import ConfigErrors

MOUNT = '[[mount]]\npath = "d"\nurl = "file:///tmp"\n'


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "c.toml"
    path.write_text(text + MOUNT)
    return load_config(str(path))


def test_default_and_a_value(tmp_path: Path) -> None:
    assert load(tmp_path, "").read.random_fetch == 64 * 1024  # type: ignore[attr-defined]
    assert load(tmp_path, '[read]\nrandom_fetch = "256KiB"\n').read.random_fetch == 256 * 1024  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "message"), [
    ('[read]\nrandom_fetch = "48KiB"\n', "must be a power of two of at least 16KiB"),
    ('[read]\nrandom_fetch = "4KiB"\n', "must be a power of two of at least 16KiB"),
    ('[read]\nrandom_fetch = "8MiB"\n', "must be at most the block size (4MiB)"),
    ('[cache]\nblock_size = "1MiB"\n[read]\nrandom_fetch = "2MiB"\n',
     "must be at most the block size (1MiB)"),
    ('[read]\nrandom_fetch = "lots"\n', "random_fetch"),
])
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path, text)
    shown = str(info.value)
    assert message in shown and "random_fetch" in shown, shown
