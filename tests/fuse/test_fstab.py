"""fstab lines, mounted by mount(8) from a temporary fstab (`mount -T FILE -a`, `mount -T FILE MNT`)
and unmounted by umount(8), with the options fleets put there: `_netdev`, `nofail`, `noauto`,
`x-systemd.automount`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fuse.test_lifecycle import mountfs_installed, needs_mount_fuse3

if TYPE_CHECKING:
    from conftest import Mounter

__all__ = ["mountfs_installed"]  # a fixture of test_lifecycle, used here too


def mount_entry(mnt: str) -> list[str] | None:
    with open("/proc/self/mounts") as f:
        return next((line.split() for line in f if line.split()[1] == mnt), None)


@needs_mount_fuse3
def test_fstab_lines_mount_with_mount_a_and_by_mount_point(
        mounter: Mounter, tmp_path: Path, tools: Any, env: dict[str, str], mountfs_installed: None) -> None:
    src = tmp_path / "bucket"
    src.mkdir()
    (src / "hello.txt").write_bytes(b"hello from fstab\n")
    config = tmp_path / "train.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "cache-a"}"\n[[mount]]\npath = "train"\nurl = "file://{src}"\n')
    auto, manual = mounter.fresh_dir("fstab-auto"), mounter.fresh_dir("fstab-noauto")
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# written by the test: a config file, and a URL with its options\n"
        f"{config}  {auto}  fuse.mountfs  _netdev,nofail,x-systemd.automount,x-systemd.idle-timeout=60  0 0\n"
        f"file://{src}  {manual}  fuse.mountfs  noauto,_netdev,nofail,cache_dir={tmp_path / 'c-b'},ro  0 0\n")
    for mnt in (auto, manual):
        mounter.track(mnt)

    result = subprocess.run(["mount", "-T", str(fstab), "-a"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    entry = mount_entry(auto)
    assert entry is not None and entry[2] == "fuse.mountfs" and entry[0] == str(config), entry
    assert not tools.is_mounted(manual)  # noauto: not by -a
    assert Path(auto, "train", "hello.txt").read_bytes() == b"hello from fstab\n"

    result = subprocess.run(["mount", "-T", str(fstab), manual], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    entry = mount_entry(manual)
    assert entry is not None and "ro" in entry[3].split(","), entry
    assert Path(manual, "hello.txt").read_bytes() == b"hello from fstab\n"

    pids = [mounter.run.status(mnt)["pid"] for mnt in (auto, manual)]
    mounter.pids.update(set(pids))
    for mnt in (auto, manual):
        result = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert not tools.is_mounted(mnt)
    for pid in pids:  # the daemon ends with its mount
        assert tools.wait_until(lambda pid=pid: not tools.pid_alive(pid), 30)
    assert os.listdir(auto) == [] and os.listdir(manual) == []
