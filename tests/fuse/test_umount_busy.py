"""`mountfs umount` of a busy mount: refused, as umount(8) refuses it, so that a process writing a file
does not lose the rest of it; `--force` cuts it off as before."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Mount, Mounter

WRITER = """
import sys
with open(sys.argv[1], "w") as f:
    f.write("held data\\n")
    f.flush()
    print("open", flush=True)
    sys.stdin.readline()  # hold the file open until told to go on
    try:
        f.write("rest of it\\n")
        f.flush()
    except OSError as exc:
        print(f"error {exc.errno}", flush=True)
        sys.exit(1)
print("closed", flush=True)
"""


@pytest.fixture
def writer(mounter: Mounter) -> Iterator[Any]:
    """Start a writer holding `path` open on the mount (after `held data\\n`); kill it at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(path: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd="/")
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _go_on(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate("go\n", timeout=60)
    return out


def _mount(mounter: Mounter) -> tuple[Mount, str]:
    store = mounter.fresh_dir("store")
    return mounter.mount(store), store


def test_umount_refuses_while_a_file_is_open_for_writing(mounter: Mounter, writer: Any,
                                                         tools: Any) -> None:
    mnt, store = _mount(mounter)
    proc = writer(mnt.join("held.txt"))
    refused = mounter.run("umount", mnt.path, timeout=120)
    assert refused.returncode != 0, refused.stderr
    assert "busy" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert tools.is_mounted(mnt.path) and tools.pid_alive(mnt.pid)
    # the writer goes on as if nothing happened, and what it wrote arrives whole
    assert _go_on(proc) == "closed\n" and proc.returncode == 0
    mounter.umount(mnt)
    with open(os.path.join(store, "held.txt")) as f:
        assert f.read() == "held data\nrest of it\n"


def test_umount_force_detaches_a_busy_mount(mounter: Mounter, writer: Any, tools: Any) -> None:
    mnt, store = _mount(mounter)
    proc = writer(mnt.join("held.txt"))
    result = mounter.run("umount", "--force", mnt.path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not tools.is_mounted(mnt.path)
    assert tools.wait_until(lambda: not tools.pid_alive(mnt.pid), 30)
    assert _go_on(proc).startswith("error") and proc.returncode == 1  # cut off, as --help says
    with open(os.path.join(store, "held.txt")) as f:
        assert f.read() == "held data\n"  # what it wrote so far


def test_umount_refuses_while_a_process_has_its_cwd_there(mounter: Mounter, tools: Any) -> None:
    """The kernel decides what busy is, as for umount(8): an open file, read or write, or a cwd."""
    mnt, _ = _mount(mounter)
    proc = subprocess.Popen(["sleep", "60"], cwd=mnt.path)
    try:
        refused = mounter.run("umount", mnt.path, timeout=120)
        assert refused.returncode != 0 and "busy" in refused.stderr, refused.stderr
        assert tools.is_mounted(mnt.path)
    finally:
        proc.kill()
        proc.wait()
    mounter.umount(mnt)
