"""Other users of a mount: with allow_other and default_permissions, real non-root users (made by
`useradd` here) read what the modes from `uid=`, `gid=`, `umask=`, `file_mode=` and `dir_mode=`
allow and are refused what they do not; and a non-root user mounts in a folder of their own
(fusermount3), with the cache in their home."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Mounter

TOOLS = ("useradd", "usermod", "userdel", "groupadd", "groupdel", "runuser")
pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                                reason=f"needs {', '.join(TOOLS)} (Debian: passwd, util-linux)")


RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: str

    def run(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNUSER, "-u", self.name, "--", *argv], capture_output=True, text=True,
                              timeout=120, cwd="/", env=env or {"PATH": "/usr/bin:/bin", "LC_ALL": "C"})


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[User, User, int]]:
    """Two users and a group that only the second is in (besides its own); removed afterwards."""
    tag = f"{os.getpid() % 100000}"
    names, group = [f"mfsa{tag}", f"mfsb{tag}"], f"mfsteam{tag}"
    made: list[list[str]] = []
    try:
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        made.append(["groupdel", group])
        for name in names:
            home = tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp")  # /root and pytest's dirs are 0700
            os.rmdir(home)
            subprocess.run(["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", name],
                           check=True, capture_output=True)
            made.append(["userdel", "--remove", name])
        subprocess.run(["usermod", "-a", "-G", group, names[1]], check=True, capture_output=True)
        a, b = (pwd.getpwnam(n) for n in names)
        yield (User(a.pw_name, a.pw_uid, a.pw_gid, a.pw_dir), User(b.pw_name, b.pw_uid, b.pw_gid, b.pw_dir),
               grp.getgrnam(group).gr_gid)
    finally:
        for command in reversed(made):
            subprocess.run(command, capture_output=True)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp dirs are 0700 root)."""
    path = tempfile.mkdtemp(prefix="mountfs-users-", dir="/tmp")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_modes_decide_what_other_users_may_do(public_dir: Path, mounter: Mounter,
                                              users: tuple[User, User, int]) -> None:
    owner, other, team = users
    src = public_dir / "bucket"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report.txt").write_bytes(b"quarterly\n")
    os.chmod(src, 0o755)
    (public_dir / "m1").mkdir()
    (public_dir / "m2").mkdir()
    # files rw-r-----, folders rwxr-x---, owned by `owner` and the group `other` is in
    shared = mounter.mount(src, "allow_other", "default_permissions", f"uid={owner.uid}", f"gid={team}",
                           "file_mode=640", "dir_mode=750", mountpoint=str(public_dir / "m1"))
    st = os.stat(shared.join("docs", "report.txt"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (owner.uid, team, 0o640)
    assert os.stat(shared.join("docs")).st_mode & 0o777 == 0o750
    report = shared.join("docs", "report.txt")

    assert owner.run("cat", report).stdout == "quarterly\n"
    assert other.run("cat", report).stdout == "quarterly\n"  # group read
    assert "report.txt" in other.run("ls", shared.join("docs")).stdout
    refused = other.run("sh", "-c", f'echo x >> "{report}"')  # no group write
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
    refused = other.run("touch", shared.join("docs", "by-other.txt"))  # no group write on the folder
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
    made = owner.run("sh", "-c", f'echo mine > "{shared.join("docs", "by-owner.txt")}"')
    assert made.returncode == 0, made.stderr
    assert (src / "docs" / "by-owner.txt").read_bytes() == b"mine\n"
    assert (src / "docs" / "report.txt").read_bytes() == b"quarterly\n"

    # umask=077 and the owner's own group: the other user is refused everything
    private = mounter.mount(src, "allow_other", "default_permissions", f"uid={owner.uid}",
                            f"gid={owner.gid}", "umask=077", mountpoint=str(public_dir / "m2"))
    assert os.stat(private.join("docs", "report.txt")).st_mode & 0o777 == 0o600
    assert owner.run("cat", private.join("docs", "report.txt")).stdout == "quarterly\n"
    for argv in (["cat", private.join("docs", "report.txt")], ["ls", private.join("docs")],
                 ["stat", private.join("docs", "report.txt")]):
        refused = other.run(*argv)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, (argv, refused)


def _fuse_for_everyone() -> str | None:
    """Why a non-root user cannot reach /dev/fuse here, or None."""
    mode = os.stat("/dev/fuse").st_mode
    if mode & 0o006 == 0o006:
        return None
    return f"/dev/fuse is mode {oct(mode & 0o777)}"


def _closed_folder_above(path: str) -> tuple[str, str] | None:
    """(a folder above `path` that other users cannot enter, its child on the way to `path`)."""
    parts = Path(path).parents
    for folder in reversed(parts):
        if str(folder) != "/" and not os.stat(folder).st_mode & 0o001:
            child = next(p for p in [*reversed(parts), Path(path)] if p.parent == folder)
            return str(folder), str(child)
    return None


def test_a_user_mounts_in_a_folder_of_their_own(users: tuple[User, User, int], env: dict[str, str],
                                                 tmp_path: Path, public_dir: Path) -> None:
    """As a user without privileges: mount (fusermount3 does the mount), read, status, umount; the
    cache goes to the user's ~/.cache/mountfs. Then with allow_other, which needs user_allow_other in
    /etc/fuse.conf (a private copy, in a mount namespace of the test's own): the other user reads what
    the modes allow. Where /dev/fuse is not open to every user (containers often make it 0600), the
    namespace also has a /dev/fuse that is (0666, as Debian's udev rules make it), so the host's
    device is not touched; likewise when the test's Python sits below a folder other users cannot
    enter (a pyenv in /root)."""
    owner, other, team = users
    home = Path(owner.home)
    shared = public_dir / "shared"
    shared.mkdir()
    os.chown(shared, owner.uid, owner.gid)
    fuse_conf = tmp_path / "fuse.conf"
    fuse_conf.write_text("user_allow_other\n")
    src, mnt = home / "bucket", home / "mnt"
    for folder in (src, mnt):
        subprocess.run(["runuser", "-u", owner.name, "--", "mkdir", "-p", str(folder)], check=True)
    subprocess.run(["runuser", "-u", owner.name, "--", "sh", "-c", f'echo "own data" > "{src}/f.txt"'],
                   check=True)
    python = sys.executable
    user_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(home),
                "PYTHONPATH": env.get("PYTHONPATH", ""), "MOUNTFS_RUNTIME_DIR": str(home / "run")}
    exports = " ".join(f"{k}='{v}'" for k, v in user_env.items())
    mountfs = f"env -i {exports} {python} -m mountfs"
    others = f"allow_other,default_permissions,gid={team},umask=027,cache_dir={home}/cache2"
    script = "\n".join([
        "set -e",
        f"runuser -u {owner.name} -- {mountfs} file://{src} {mnt} || {{ cat {home}/run/*.log; exit 1; }}",
        f"runuser -u {owner.name} -- cat {mnt}/f.txt",
        f"runuser -u {owner.name} -- {mountfs} status {mnt} --json > {tmp_path}/status.json",
        f"grep -q ' {mnt} fuse.mountfs ' /proc/self/mounts && echo mounted-here",
        f"runuser -u {owner.name} -- {mountfs} umount {mnt}",
        f"grep -q ' {mnt} ' /proc/self/mounts && echo still-mounted || echo unmounted",
        # allow_other: refused until /etc/fuse.conf says user_allow_other
        f"runuser -u {owner.name} -- {mountfs} file://{src} {shared} -o {others} 2> {tmp_path}/refused"
        " && echo allowed-without-conf || echo refused-without-conf",
        f"mount --bind {fuse_conf} /etc/fuse.conf",
        f"runuser -u {owner.name} -- {mountfs} file://{src} {shared} -o {others}",
        f"runuser -u {other.name} -- cat {shared}/f.txt",
        f"runuser -u {other.name} -- sh -c 'echo x >> {shared}/f.txt' 2>/dev/null && echo other-wrote"
        " || echo other-refused",
        f"runuser -u {owner.name} -- {mountfs} umount {shared}",
    ])
    setup = []
    why = _fuse_for_everyone()
    if why is not None:
        device = tmp_path / "fuse"
        os.mknod(device, 0o666 | 0o020000, os.makedev(10, 229))
        os.chmod(device, 0o666)
        setup.append(f"mount --bind {device} /dev/fuse")
    hidden = _closed_folder_above(os.path.realpath(python))
    if hidden is not None:  # e.g. a pyenv under /root (0700): show just that branch to the user
        closed, branch = hidden
        keep = tmp_path / "branch"
        keep.mkdir()
        setup += [f"mount --bind {branch} {keep}", f"mount -t tmpfs -o mode=0755 tmpfs {closed}",
                  f"mkdir -p {branch}", f"mount --bind {keep} {branch}"]
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private /etc/fuse.conf")
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join([*setup, script])]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.split() == ["own", "data", "mounted-here", "unmounted", "refused-without-conf",
                                     "own", "data", "other-refused"], (result.stdout, result.stderr)
    refused = (tmp_path / "refused").read_text()
    assert "user_allow_other" in refused and "Traceback" not in refused, refused
    status = (tmp_path / "status.json").read_text()
    assert f'"{home}/.cache/mountfs"' in status, status  # the cache dir in the user's home
    with contextlib.suppress(OSError):
        assert os.stat(home / ".cache" / "mountfs").st_uid == owner.uid
