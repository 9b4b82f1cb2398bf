"""The daemon's life: ready when the command returns, unmounted cleanly by signals and `mountfs umount`,
run in the foreground with -f, and started by mount(8) through mount.fuse3."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Bucket, Mounter, Runner


def test_mount_answers_when_the_command_returns(mounter: Mounter, bucket: Bucket, tools: Any) -> None:
    mnt = mounter.mount(bucket.url)  # returns right after `mountfs` exits 0
    st = os.stat(mnt.path)
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_ino == 1
    assert tools.is_mounted(mnt.path) and os.path.ismount(mnt.path)
    assert "empty" in os.listdir(mnt.path)
    status = mounter.run.status(mnt)
    assert status["pid"] == mnt.pid and status["pid"] != os.getpid()
    assert tools.pid_alive(status["pid"])
    assert status["mountpoint"] == mnt.path and status["source"] == bucket.url
    assert status["cache"]["block_size"] == bucket.BLOCK_SIZE and status["cache"]["dir"] == mnt.cache_dir
    for key in ("hits", "misses", "shared", "blocks", "bytes", "hit_ratio"):
        assert key in status["cache"], key
    for key in ("opens", "reads", "bytes_served"):
        assert key in status["reads"], key
    for key in ("gets", "requests", "bytes_fetched"):
        assert key in status["store"], key
    assert status["stores"][0]["requests"].get("list", 0) >= 1
    assert isinstance(status["inodes"], int)
    # the plain-text form names the mount too
    text = mounter.run("status", mnt.path)
    assert text.returncode == 0 and mnt.path in text.stdout
    listing = mounter.run("status", "--json")
    assert listing.returncode == 0
    assert mnt.path in [s["mountpoint"] for s in json.loads(listing.stdout)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly(mounter: Mounter, bucket: Bucket, tools: Any, signum: int) -> None:
    mnt = mounter.mount(bucket.url)
    with open(mnt.join(bucket.SPACE_NAME), "rb") as f:
        assert f.read() == bucket.read(bucket.SPACE_NAME)
    assert mnt.pid
    os.kill(mnt.pid, signum)
    assert tools.wait_until(lambda: not tools.is_mounted(mnt.path), 30), "still mounted after the signal"
    assert tools.wait_until(lambda: not tools.pid_alive(mnt.pid), 30), "the daemon did not exit"
    assert os.listdir(mnt.path) == []
    gone = mounter.run("status", mnt.path, "--json")
    assert gone.returncode == 1 and "no mountfs daemon" in gone.stderr


def test_umount_command(mounter: Mounter, bucket: Bucket, tools: Any) -> None:
    mnt = mounter.mount(bucket.url)
    result = mounter.run("umount", mnt.path)
    assert result.returncode == 0, result.stderr
    # `mountfs umount` returns only once the daemon is gone and nothing is mounted
    assert not tools.is_mounted(mnt.path)
    assert not tools.pid_alive(mnt.pid)


def test_umount_of_a_path_not_mounted(mountfs: Runner, tmp_path: Path) -> None:
    result = mountfs("umount", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"mountfs: {tmp_path} is not mounted"


def test_remount_after_umount_on_the_same_point(mounter: Mounter, bucket: Bucket) -> None:
    first = mounter.mount(bucket.url)
    mounter.umount(first)
    second = mounter.mount(bucket.url, mountpoint=first.path, cache_dir=first.cache_dir)
    assert set(os.listdir(second.path)) == set(os.listdir(bucket.root))


def test_foreground_stops_on_sigterm(mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path,
                                     env: dict[str, str]) -> None:
    mnt = mounter.fresh_dir("fg-mnt")
    log = tmp_path / "fg.log"
    mounter.track(mnt)
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mountfs", bucket.url, mnt, "-f", "-o",
             f"cache_dir={tmp_path / 'cache'},block_size=1MiB"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/")
    mounter.pids.add(process.pid)
    try:
        assert tools.wait_until(lambda: tools.is_mounted(mnt) or process.poll() is not None, 30)
        assert process.poll() is None, log.read_text()
        assert tools.wait_until(lambda: mounter.run("status", mnt, timeout=20).returncode == 0, 30), \
            log.read_text()
        assert mounter.run.status(mnt)["pid"] == process.pid  # -f: no fork
        with open(os.path.join(mnt, bucket.FRENCH_NAME), "rb") as f:
            assert f.read() == bucket.read(bucket.FRENCH_NAME)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert not tools.is_mounted(mnt)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# mount(8) removes PATH from the environment of its helpers (util-linux sanitizes it), so the
# `/bin/sh -c "mountfs ..."` that mount.fuse3 runs searches the shell's default PATH only.
HELPER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
needs_mount_fuse3 = pytest.mark.skipif(not os.path.exists("/sbin/mount.fuse3"),
                                       reason="/sbin/mount.fuse3 is missing (Debian package fuse3)")


def check_fstab_style_mount(mounter: Mounter, bucket: Bucket, tools: Any, mnt: str, cache: Path) -> None:
    assert tools.is_mounted(mnt)
    with open("/proc/self/mounts") as f:
        fields = next(line.split() for line in f if line.split()[1] == mnt)
    assert fields[2] == "fuse.mountfs" and fields[0] == bucket.url, fields
    with open(os.path.join(mnt, bucket.JAPANESE_NAME), "rb") as f:
        assert f.read() == bucket.read(bucket.JAPANESE_NAME)
    status = mounter.run.status(mnt)
    assert status["cache"]["dir"] == str(cache) and status["cache"]["block_size"] == bucket.BLOCK_SIZE
    mounter.pids.add(status["pid"])
    result = mounter.run("umount", mnt)
    assert result.returncode == 0, result.stderr
    assert not tools.is_mounted(mnt)
    assert tools.wait_until(lambda: not tools.pid_alive(status["pid"]), 30)


@pytest.fixture
def mountfs_installed(tools: Any) -> Iterator[None]:
    """`mountfs` where mount(8)'s helpers look for it, as an install puts it. mount(8) drops PATH
    for mount.fuse3, so the venv's bin cannot serve; link it into /usr/local/bin for this test
    when nothing is there, and remove the link afterwards."""
    if shutil.which("mountfs", path=HELPER_PATH):
        yield
        return
    link = "/usr/local/bin/mountfs"
    if os.path.islink(link) and not os.path.exists(link):
        os.unlink(link)  # left dangling by an earlier run whose venv is gone
    os.symlink(os.path.join(tools.venv_bin, "mountfs"), link)
    try:
        yield
    finally:
        os.unlink(link)


@needs_mount_fuse3
def test_mount_t_fuse_mountfs(mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path,
                              env: dict[str, str], mountfs_installed: None) -> None:
    """`mount -t fuse.mountfs SOURCE MNT -o ...`, as an /etc/fstab line does."""
    mnt = mounter.fresh_dir("mount-t")
    cache = tmp_path / "cache"
    mounter.external(["mount", "-t", "fuse.mountfs", bucket.url, mnt, "-o",
                      f"cache_dir={cache},block_size=1MiB,_netdev,nofail"], mnt, env)
    check_fstab_style_mount(mounter, bucket, tools, mnt, cache)


@needs_mount_fuse3
def test_mount_fuse3_helper_with_venv_on_path(mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path,
                                              env: dict[str, str]) -> None:
    """What mount(8) runs for `-t fuse.mountfs`, with the arguments and options it adds."""
    mnt = mounter.fresh_dir("mount-fuse3")
    cache = tmp_path / "cache"
    mounter.external(["/sbin/mount.fuse3", bucket.url, mnt, "-t", "fuse.mountfs", "-o",
                      f"rw,cache_dir={cache},block_size=1MiB,_netdev,dev,suid"], mnt,
                     {**env, "PATH": tools.venv_bin + ":" + env.get("PATH", HELPER_PATH)})
    check_fstab_style_mount(mounter, bucket, tools, mnt, cache)


@needs_mount_fuse3
def test_mount_t_fuse_with_program_path(mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path,
                                        env: dict[str, str]) -> None:
    """`mount -t fuse 'PROGRAM#SOURCE' MNT`: mount(8) itself, with no PATH needed."""
    program = os.path.join(tools.venv_bin, "mountfs")
    if not os.access(program, os.X_OK):
        pytest.skip(f"no mountfs console script in {tools.venv_bin}")
    mnt = mounter.fresh_dir("mount-t-fuse")
    cache = tmp_path / "cache"
    mounter.external(["mount", "-t", "fuse", f"{program}#{bucket.url}", mnt, "-o",
                      f"cache_dir={cache},block_size=1MiB,_netdev"], mnt, env)
    check_fstab_style_mount(mounter, bucket, tools, mnt, cache)


# --- a daemon that died (kill -9): the kernel keeps a dead mount ("Transport endpoint is not connected")

def kill_daemon_hard(mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path) -> str:
    """Mount with a zero metadata TTL (nothing of the root stays in the kernel's attribute cache, as
    after the default 60 s), then SIGKILL the daemon; returns the dead mount point."""
    config = tmp_path / "ttl0.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "cache"}"\n\n[read]\nmetadata_ttl = "0s"\n\n'
                      f'[[mount]]\npath = ""\nurl = "{bucket.url}"\n')
    mnt = mounter.mount(str(config))
    assert mnt.pid
    os.kill(mnt.pid, signal.SIGKILL)
    assert tools.wait_until(lambda: not tools.pid_alive(mnt.pid), 10)
    assert tools.is_mounted(mnt.path)  # the kernel still holds it
    with pytest.raises(OSError) as info:
        os.stat(mnt.path)
    assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)  # the kernel answers either
    return mnt.path


def test_umount_after_the_daemon_was_killed(mounter: Mounter, bucket: Bucket, tools: Any,
                                            tmp_path: Path) -> None:
    """`mountfs umount` is how a user cleans up after a crash: it must detach the dead mount."""
    mnt = kill_daemon_hard(mounter, bucket, tools, tmp_path)
    try:
        result = mounter.run("umount", mnt, timeout=60)
        assert (result.returncode, result.stderr) == (0, ""), "dead mount not detached"
        assert not tools.is_mounted(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, timeout=30)


def test_mount_over_a_dead_mount_point(mounter: Mounter, bucket: Bucket, tools: Any,
                                       tmp_path: Path) -> None:
    """Mounting again over a dead mount is refused before mounting, saying what is wrong with it:
    the directory exists, so "does not exist" sends the user the wrong way."""
    mnt = kill_daemon_hard(mounter, bucket, tools, tmp_path)
    try:
        result = mounter.run(bucket.url, mnt, "-o", f"cache_dir={tmp_path / 'cache2'}", timeout=60)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mountfs: "), result.stderr
        assert "does not exist" not in lines[0], lines[0]
        assert "mount" in lines[0]
    finally:
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, timeout=30)
    assert not tools.is_mounted(mnt)
