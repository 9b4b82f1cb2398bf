"""Errors found before mounting: exit code 1, one line `mountfs: ...` on stderr, nothing mounted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Bucket, Mounter, Runner


def assert_refused(result: Any, *fragments: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    line: str = lines[0]
    assert line.startswith("mountfs: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert result.stdout == ""
    return line


def unmounted(tools: Any, path: str | Path) -> bool:
    return not tools.is_mounted(path) and not os.path.ismount(path)


@pytest.fixture
def mnt(tmp_path: Path) -> str:
    path = tmp_path / "mnt"
    path.mkdir()
    return str(path)


@pytest.fixture
def cache_opt(tmp_path: Path) -> str:
    return f"cache_dir={tmp_path / 'cache'}"


def test_missing_mount_point(mountfs: Runner, bucket: Bucket, tmp_path: Path, cache_opt: str,
                             tools: Any) -> None:
    missing = str(tmp_path / "no-such-dir")
    assert_refused(mountfs(bucket.url, missing, "-o", cache_opt), missing, "does not exist")
    assert not os.path.exists(missing) and unmounted(tools, missing)


def test_mount_point_is_a_file(mountfs: Runner, bucket: Bucket, tmp_path: Path, cache_opt: str,
                               tools: Any) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    assert_refused(mountfs(bucket.url, str(file), "-o", cache_opt), str(file), "not a directory")
    assert unmounted(tools, file) and file.read_text() == "x"


def test_non_empty_mount_point_then_nonempty_option(mountfs: Runner, mounter: Mounter, bucket: Bucket,
                                                    mnt: str, cache_opt: str, tools: Any) -> None:
    Path(mnt, "already-here").write_text("hidden")
    assert_refused(mountfs(bucket.url, mnt, "-o", cache_opt), mnt, "not empty", "nonempty")
    assert unmounted(tools, mnt)
    mounted = mounter.mount(bucket.url, "nonempty", mountpoint=mnt)
    assert set(os.listdir(mounted.path)) == set(os.listdir(bucket.root))
    mounter.umount(mounted)
    assert os.listdir(mnt) == ["already-here"]


def test_unknown_scheme(mountfs: Runner, mnt: str, cache_opt: str, tools: Any) -> None:
    line = assert_refused(mountfs("s4://x", mnt, "-o", cache_opt), "s4://x", "unknown scheme")
    assert "s3://" in line  # the hint
    assert unmounted(tools, mnt)


def test_unreachable_gcs_endpoint(mountfs: Runner, mnt: str, cache_opt: str, tools: Any) -> None:
    env = dict(mountfs.env, STORAGE_EMULATOR_HOST="127.0.0.1:1")  # nothing listens on port 1
    assert_refused(mountfs("gs://my-bucket/some/prefix", mnt, "-o", cache_opt, env=env),
                   "gs://my-bucket/some/prefix", "cannot reach gs://my-bucket at http://127.0.0.1:1")
    assert unmounted(tools, mnt)


def test_missing_bucket_folder(mountfs: Runner, tmp_path: Path, mnt: str, cache_opt: str,
                               tools: Any) -> None:
    missing = tmp_path / "no-such-bucket"
    assert_refused(mountfs(f"file://{missing}", mnt, "-o", cache_opt), str(missing), "does not exist")
    assert unmounted(tools, mnt)


def test_config_file_with_an_unknown_key(mountfs: Runner, bucket: Bucket, tmp_path: Path, mnt: str,
                                         tools: Any) -> None:
    config = tmp_path / "mount.toml"
    config.write_text(
        "[cache]\n"
        f'dir = "{tmp_path / "cache"}"\n'
        "block_sise = \"1MiB\"\n"
        "\n"
        "[[mount]]\n"
        'path = ""\n'
        f'url = "{bucket.url}"\n')
    assert_refused(mountfs(str(config), mnt), f"{config}:3", "block_sise", "unknown key")
    assert unmounted(tools, mnt)


def test_config_file_that_works(mounter: Mounter, bucket: Bucket, tmp_path: Path) -> None:
    config = tmp_path / "ok.toml"
    config.write_text(
        "[cache]\n"
        f'dir = "{tmp_path / "cache"}"\n'
        'block_size = "1MiB"\n'
        "\n"
        "[[mount]]\n"
        'path = "data"\n'
        f'url = "{bucket.url}"\n'
        "read_only = true\n")
    mnt = mounter.mount(str(config), block_size=None)
    assert os.listdir(mnt.path) == ["data"]
    with open(mnt.join("data", bucket.SPACE_NAME), "rb") as f:
        assert f.read() == bucket.read(bucket.SPACE_NAME)
    status = mounter.run.status(mnt)
    assert status["cache"]["block_size"] == bucket.BLOCK_SIZE


@pytest.mark.parametrize("option", ["bogus", "uid", "cache_dir", "umask=9"])
def test_bad_mount_option(mountfs: Runner, bucket: Bucket, mnt: str, cache_opt: str, option: str,
                          tools: Any) -> None:
    line = assert_refused(mountfs(bucket.url, mnt, "-o", f"{cache_opt},{option}"))
    assert option in line or "option" in line, line
    assert unmounted(tools, mnt)


@pytest.mark.parametrize("size", ["0", "1", "3MiB", "1TiB", "128MiB"])
def test_a_block_size_option_is_held_to_the_config_keys_rule(mountfs: Runner, tmp_path: Path, mnt: str,
                                                             size: str, tools: Any) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    cache = tmp_path / "cache"
    line = assert_refused(mountfs(f"file://{folder}", mnt, "-o", f"cache_dir={cache},block_size={size}"),
                          f"block_size={size}", "must be a power of two from 64KiB to 64MiB")
    assert "Traceback" not in line
    assert unmounted(tools, mnt)
    assert not cache.exists(), "nothing was set up"


def test_unknown_option_message(mountfs: Runner, bucket: Bucket, mnt: str, cache_opt: str,
                                tools: Any) -> None:
    assert_refused(mountfs(bucket.url, mnt, "-o", f"{cache_opt},bogus"), "unknown mount option", "bogus")
    assert unmounted(tools, mnt)


def test_already_mounted(mounter: Mounter, mountfs: Runner, bucket: Bucket, cache_opt: str,
                         tools: Any) -> None:
    mounted = mounter.mount(bucket.url)
    assert_refused(mountfs(bucket.url, mounted.path, "-o", cache_opt), "already a mount point")
    # the first mount is unharmed
    assert tools.is_mounted(mounted.path) and "empty" in os.listdir(mounted.path)
