"""systemd/mountfs@.service, run the way systemd runs it: its ExecStart with %i and ${MOUNTPOINT}
filled in, NOTIFY_SOCKET set, READY=1 expected only once the mount answers, SIGTERM to stop."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Bucket, Mounter

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
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                       env={**env, "NOTIFY_SOCKET": notify_path})
        mounter.pids.add(process.pid)
        try:
            message = notify.recv(4096).decode()
            assert "READY=1" in message.split("\n"), message
            # Ready means ready: the mount answers at once, from the process systemd started.
            assert tools.is_mounted(mnt)
            with open(os.path.join(mnt, bucket.FRENCH_NAME), "rb") as f:
                assert f.read() == bucket.read(bucket.FRENCH_NAME)
            assert mounter.run.status(mnt)["pid"] == process.pid
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log.read_text()
            assert not tools.is_mounted(mnt)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
