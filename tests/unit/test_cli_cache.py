"""`mountfs cache stats|prune|verify` and `mountfs warm` without a mount: arguments, output, exit codes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from mountfs import cli
from mountfs.cache.blocks import BlockFiles
from mountfs.cache.index import CacheIndex
from tests.unit.cache_helpers import add_block

KB = 1000


def populate(cache_dir: Path, count: int = 5, size: int = 3 * KB) -> list[bytes]:
    index, files = CacheIndex(str(cache_dir)), BlockFiles(str(cache_dir))
    now = time.time()
    keys = [add_block(index, files, f"f{n}", 0, size, now - 3600 * (count - n)) for n in range(count)]
    index.close()
    return keys


def test_the_cache_dir_comes_from_the_option_the_flag_or_the_config(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path}/from-config"\n[[mount]]\npath = "a"\n'
                      f'url = "file://{tmp_path}"\n')
    assert cli.cache_dir_of(str(config), [], None) == f"{tmp_path}/from-config"
    assert cli.cache_dir_of(str(config), ["ro,cache_dir=/x/y"], None) == "/x/y"
    assert cli.cache_dir_of(str(config), ["cache_dir=/x/y"], "/z") == "/z"


def test_stats_prints_size_files_objects_and_ages(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOUNTFS_RUNTIME_DIR", str(tmp_path / "run"))
    populate(tmp_path / "c")
    assert cli.main(["cache", "stats", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "14.6 KiB in 5 files, 5 objects" in out and "oldest" in out and "h ago" in out
    assert "none running on this cache dir" in out
    assert cli.main(["cache", "stats", "--json", "-o", f"cache_dir={tmp_path / 'c'}"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["files"], figures["bytes"], figures["objects"], figures["mounts"]) == (5, 15 * KB, 5, [])
    assert figures["oldest_access"] < figures["newest_access"]


def test_stats_shows_the_hit_ratio_of_each_mount() -> None:
    from mountfs.cache.maintenance import CacheStatsReport

    report = CacheStatsReport("/c", 2, 2048, 1, 1.0, 2.0, 4096, 0, 0, 1 << 30, 1 << 29)
    daemon = {"mountpoint": "/mnt/a", "pid": 9, "cache": {"hits": 3, "misses": 1, "hit_ratio": 0.75,
                                                          "evicted": 4}}
    text = cli.format_cache_stats(cli.cache_stats_json(report, [daemon]))
    assert "/mnt/a (pid 9): hit ratio 75.0% (3 hits, 1 misses), 4 evicted" in text


def test_a_dir_without_a_cache_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("stats", "verify"):
        assert cli.main(["cache", command, "--cache-dir", str(tmp_path / "typo")]) == 1
        assert "no mountfs cache in" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_prune_needs_one_way_and_reads_sizes_and_durations(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    populate(tmp_path / "c")
    where = ["--cache-dir", str(tmp_path / "c")]
    with pytest.raises(SystemExit) as info:
        cli.main(["cache", "prune", *where])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["cache", "prune", "--all", "--to", "1KiB", *where])
    with pytest.raises(SystemExit):
        cli.main(["cache", "prune", "--older-than", "soon", *where])
    capsys.readouterr()
    assert cli.main(["cache", "prune", "--older-than", "150m", *where]) == 0  # blocks 3h, 4h and 5h old
    assert capsys.readouterr().out.startswith("removed 3 blocks (8.8 KiB); 2 blocks (5.9 KiB) left")
    assert cli.main(["cache", "prune", "--to", "4KB", *where]) == 0
    assert "removed 1 blocks" in capsys.readouterr().out
    assert cli.main(["cache", "prune", "--all", *where]) == 0
    assert "removed 1 blocks (2.9 KiB); 0 blocks (0 B) left" in capsys.readouterr().out


def test_verify_repairs_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = populate(tmp_path / "c")
    where = ["--cache-dir", str(tmp_path / "c")]
    assert cli.main(["cache", "verify", *where]) == 0
    assert "checked 5 blocks; clean" in capsys.readouterr().out
    path = Path(BlockFiles(str(tmp_path / "c")).path(keys[0]))
    path.write_bytes(b"x" * path.stat().st_size)
    Path(BlockFiles(str(tmp_path / "c")).path(keys[1])).unlink()
    assert cli.main(["cache", "verify", *where]) == 1
    out = capsys.readouterr().out
    assert "repaired" in out and "1 corrupt blocks dropped" in out and "1 records without a block" in out
    assert cli.main(["cache", "verify", *where]) == 0


def test_warm_refuses_paths_outside_a_mountfs_mount(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["warm", str(tmp_path)]) == 2
    assert "is not in a mountfs mount" in capsys.readouterr().err


def test_warm_lists_files_with_sizes_and_what_failed(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"12")
    (tmp_path / "d" / "e" / "b").write_bytes(b"123")
    files, failed = cli.warm_list([str(tmp_path / "d"), str(tmp_path / "nope")])
    assert files == [(str(tmp_path / "d" / "a"), 2), (str(tmp_path / "d" / "e" / "b"), 3)]
    assert failed == [(str(tmp_path / "nope"), "No such file or directory")]


def test_the_progress_bar_shows_bytes_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = cli.Progress(4, 4 << 20, stream)
    progress.add(1 << 20, files=1)
    line = progress.line()
    assert "25.0%" in line and "1.0 MiB/4.0 MiB" in line and "1/4 files" in line
    assert "/s ETA" in line
    progress.show()  # not a tty: at most a line every few seconds
    assert stream.getvalue().count("\n") == 1
