"""A mounted `file://` folder is a boundary, in direct and cached (`-o cache_local`) mounts alike.

Its symlinks show as symlinks, with the target as stored; the daemon never follows one. The kernel
follows them from the mount, as for any symlink, with the caller's own permissions: a relative
target within the folder is the file in the mount, one that climbs out resolves beside the mount
point, an absolute one is that path on this machine, which a user reads or writes only if they
could anyway. Before, the daemon followed them as root and served what was outside to anyone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Mounter

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")

SECRET = b"root's secret\n"
INSIDE = b"inside the folder\n"


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp dirs are 0700 root). Tests name it before
    `mounter`, so that it is removed after the mounter's teardown has unmounted."""
    path = Path(tempfile.mkdtemp(prefix="mountfs-fuse-links-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def layout(public: Path) -> dict[str, str]:
    """public/local (mounted) with symlinks of every kind; public/elsewhere outside it, root's."""
    local, elsewhere = public / "local", public / "elsewhere"
    (local / "sub").mkdir(parents=True)
    (elsewhere / "dir").mkdir(parents=True)
    for folder in (local, local / "sub", elsewhere, elsewhere / "dir"):
        folder.chmod(0o755)
    (elsewhere / "secret").write_bytes(SECRET)
    (elsewhere / "secret").chmod(0o600)
    (local / "target").write_bytes(INSIDE)
    links = {
        "abs_link": str(elsewhere / "secret"),
        "rel_up_link": "../elsewhere/secret",
        "dir_link": str(elsewhere / "dir"),
        "inside_link": "target",
        "sub/up_inside": "../target",
    }
    for name, target in links.items():
        (local / name).symlink_to(target)
    return links


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})


def outside_untouched(public: Path) -> None:
    assert (public / "elsewhere" / "secret").read_bytes() == SECRET
    assert sorted(p.name for p in (public / "elsewhere").iterdir()) == ["dir", "secret"]
    assert list((public / "elsewhere" / "dir").iterdir()) == []


@pytest.fixture(params=["direct", "cache_local"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def mount_public(mounter: Mounter, public: Path, mode: str) -> str:
    mnt = public / "mounts" / "mnt"  # one level deeper than the folder: "../x" means another place
    mnt.mkdir(parents=True)
    (public / "mounts").chmod(0o755)
    mounted = mounter.mount(f"file://{public / 'local'}", "allow_other", mountpoint=str(mnt),
                            cache_local=mode == "cache_local")
    return mounted.path


def test_symlinks_show_as_symlinks_with_their_stored_target(public: Path, layout: dict[str, str],
                                                            mounter: Mounter, mode: str) -> None:
    mnt = mount_public(mounter, public, mode)
    for name, target in layout.items():
        assert stat.S_ISLNK(os.lstat(f"{mnt}/{name}").st_mode), name
        assert os.readlink(f"{mnt}/{name}") == target
        assert os.lstat(f"{mnt}/{name}").st_size == len(target)
    kinds = {e.name: (e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in os.scandir(mnt)}
    assert kinds == {"abs_link": (True, False), "rel_up_link": (True, False), "dir_link": (True, False),
                     "inside_link": (True, False), "sub": (False, True), "target": (False, False)}
    # Followed by the kernel, from the mount: inside the folder they are the mount's files...
    assert Path(f"{mnt}/inside_link").read_bytes() == INSIDE
    assert Path(f"{mnt}/sub/up_inside").read_bytes() == INSIDE
    # ...and one that climbs out lands beside the mount point, not beside the folder.
    with pytest.raises(FileNotFoundError):
        Path(f"{mnt}/rel_up_link").read_bytes()
    outside_untouched(public)


def test_the_daemon_reads_and_writes_nothing_through_a_symlink(public: Path, layout: dict[str, str],
                                                               mounter: Mounter, mode: str) -> None:
    mnt = mount_public(mounter, public, mode)
    # Another user: the absolute link is followed with their permissions, not the daemon's (root).
    read = as_nobody("cat", f"{mnt}/abs_link")
    assert read.returncode != 0 and "Permission denied" in read.stderr, read
    assert SECRET.decode() not in read.stdout
    write = as_nobody("sh", "-c", f'echo y > "{mnt}/abs_link"')
    assert write.returncode != 0 and "Permission denied" in write.stderr, write
    create = as_nobody("sh", "-c", f'echo x > "{mnt}/dir_link/new"')
    assert create.returncode != 0 and "Permission denied" in create.stderr, create
    outside_untouched(public)
    # The mount itself still works for them (no default_permissions: the daemon decides).
    assert as_nobody("cat", f"{mnt}/inside_link").stdout == INSIDE.decode()
    # No open of a link reaches the daemon: the kernel refuses O_NOFOLLOW on a symlink itself.
    for name in ("abs_link", "rel_up_link", "dir_link", "inside_link"):
        for flags in (os.O_RDONLY, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
            with pytest.raises(OSError) as info:
                os.open(f"{mnt}/{name}", flags | os.O_NOFOLLOW)
            assert info.value.errno == errno.ELOOP, (name, flags)
    outside_untouched(public)


def test_links_are_removed_and_renamed_as_links(public: Path, layout: dict[str, str],
                                                mounter: Mounter, mode: str) -> None:
    mnt = mount_public(mounter, public, mode)
    local = public / "local"
    os.rename(f"{mnt}/inside_link", f"{mnt}/renamed_link")
    assert os.readlink(f"{mnt}/renamed_link") == "target" and os.readlink(local / "renamed_link") == "target"
    assert Path(f"{mnt}/renamed_link").read_bytes() == INSIDE
    os.rename(f"{mnt}/sub", f"{mnt}/sub2")  # a folder holding a link moves with it, still a link
    assert os.readlink(local / "sub2" / "up_inside") == "../target"
    os.unlink(f"{mnt}/abs_link")
    os.unlink(f"{mnt}/dir_link")
    assert not os.path.lexists(local / "abs_link") and not os.path.lexists(local / "dir_link")
    outside_untouched(public)


def test_a_folder_swapped_for_a_symlink_after_lookup_leads_nowhere(public: Path, layout: dict[str, str],
                                                                   mounter: Mounter, mode: str) -> None:
    """The kernel knows `x` as a directory; then `x` becomes a symlink to a folder outside: what the
    daemon opens below it is resolved afresh inside the folder, and refused."""
    local, elsewhere = public / "local", public / "elsewhere"
    (local / "x").mkdir()
    (local / "x" / "secret").write_bytes(b"mine\n")
    (elsewhere / "dir" / "secret").write_bytes(SECRET)
    mnt = mount_public(mounter, public, mode)
    assert os.listdir(f"{mnt}/x") == ["secret"]
    assert stat.S_ISREG(os.stat(f"{mnt}/x/secret").st_mode)
    shutil.rmtree(local / "x")
    (local / "x").symlink_to(elsewhere / "dir")
    with pytest.raises(OSError) as info:
        Path(f"{mnt}/x/secret").read_bytes()
    assert info.value.errno in (errno.EACCES, errno.ENOENT), info.value
    with pytest.raises(OSError), open(f"{mnt}/x/secret", "r+b") as f:
        f.write(b"overwritten")
    with pytest.raises(OSError), open(f"{mnt}/x/new", "wb") as f:
        f.write(b"created")
    # A cached mount keeps what it could not upload (close said EIO) and retries it: drop it.
    for name in ("new", "secret"):
        with contextlib.suppress(OSError):
            os.unlink(f"{mnt}/x/{name}")
    assert sorted(p.name for p in (elsewhere / "dir").iterdir()) == ["secret"]
    assert (elsewhere / "dir" / "secret").read_bytes() == SECRET
