"""systemd/mountfs@.service, run the way systemd runs it: its ExecStart with %i and ${MOUNTPOINT}
filled in, NOTIFY_SOCKET and JOURNAL_STREAM set, READY=1 expected only once the mount answers, then
STATUS= lines with live figures, SIGTERM to stop, STOPPING=1 while it drains; log lines carry their
syslog priority for the journal. And `systemd-analyze verify` on the units in systemd/."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fuse.test_lifecycle import mountfs_installed

if TYPE_CHECKING:
    from conftest import Bucket, Mounter

__all__ = ["mountfs_installed"]  # a fixture of test_lifecycle, used here too
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "mountfs@.service"


def unit_settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, in order (systemd allows a key more than once)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_is_a_notify_service_that_restarts_on_failure() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["Environment"] == ["MOUNTPOINT=/mnt/%i"]
    assert unit["EnvironmentFile"] == ["-/etc/mountfs/%i.env"]
    assert "-/bin/fusermount3 -u -z ${MOUNTPOINT}" in unit["ExecStartPre"]
    assert unit["WantedBy"] == ["multi-user.target"]


def test_execstart_announces_ready_once_mounted_and_stops_on_sigterm(
        mounter: Mounter, bucket: Bucket, tools: Any, tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "train.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "cache"}"\nblock_size = "1MiB"\n'
                      f'[[mount]]\npath = ""\nurl = "{bucket.url}"\n')
    mnt = mounter.fresh_dir("systemd-mnt")
    mounter.track(mnt)
    (exec_start,) = unit_settings()["ExecStart"]
    argv = shlex.split(exec_start.replace("%i", "train").replace("${MOUNTPOINT}", mnt))
    assert argv[:2] == ["/usr/local/bin/mountfs", "/etc/mountfs/train.toml"] and argv[-1] == "-f"
    argv = [sys.executable, "-m", "mountfs", str(config), *argv[2:]]

    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(30)
        log = tmp_path / "daemon.log"
        with open(log, "w") as out:
            st = os.fstat(out.fileno())  # what systemd sets when stderr is its journal stream
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                       env={**env, "NOTIFY_SOCKET": notify_path,
                                            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        mounter.pids.add(process.pid)
        try:
            message = notify.recv(4096).decode()
            assert "READY=1" in message.split("\n"), message
            # Ready means ready: the mount answers at once, from the process systemd started.
            assert tools.is_mounted(mnt)
            with open(os.path.join(mnt, bucket.FRENCH_NAME), "rb") as f:
                assert f.read() == bucket.read(bucket.FRENCH_NAME)
            assert mounter.run.status(mnt)["pid"] == process.pid
            status = notify.recv(4096).decode()  # live figures follow at once, then every few seconds
            assert status.startswith("STATUS=served ") and "upload(s) pending" in status, status
            process.send_signal(signal.SIGTERM)
            stopping = notify.recv(4096).decode().split("\n")
            assert "STOPPING=1" in stopping and "STATUS=unmounting: 0 upload(s) pending (0 B)" in stopping
            assert process.wait(timeout=60) == 0, log.read_text()
            assert not tools.is_mounted(mnt)
            lines = log.read_text().splitlines()
            assert any(line.startswith(f"<6>[{mnt}] mountfs.mount: mounted ") for line in lines), lines
            assert all(line[:3] in {"<2>", "<3>", "<4>", "<6>", "<7>"} for line in lines), lines
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_systemd_analyze_verify_passes_on_the_units(mountfs_installed: None) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (no systemd here)")
    units = sorted(str(p) for p in UNIT.parent.iterdir() if p.suffix in (".service", ".mount", ".automount"))
    assert {Path(u).name for u in units} >= {"mountfs@.service", "mnt-train.mount", "mnt-train.automount"}
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    mount = (UNIT.parent / "mnt-train.mount").read_text()
    assert "Type=fuse.mountfs" in mount and "Where=/mnt/train" in mount
