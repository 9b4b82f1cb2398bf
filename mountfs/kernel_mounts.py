"""What the kernel has mounted, read from /proc/self/mountinfo.

Never by stat-ing the path: the mount point of a daemon that died answers ENOTCONN, and that of a
hung one does not answer at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    raw = field.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


@dataclass(frozen=True)
class MountEntry:
    fs_type: str  # "fuse.mountfs", "ext4", ...
    device: str  # "MAJ:MIN", which names the mount's /sys/class/bdi entry


def mount_entry(path: str | os.PathLike[str]) -> MountEntry | None:
    """What is mounted exactly at `path` (the last mount there, the visible one), or None."""
    target = os.path.abspath(path)
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                separator = fields.index("-")
                if _unescape(fields[4]) == target:
                    found = MountEntry(fields[separator + 1], fields[2])
    except OSError:
        return None
    return found


def mount_type(path: str | os.PathLike[str]) -> str | None:
    """The file system type mounted exactly at `path` ("fuse.mountfs", ...), or None."""
    entry = mount_entry(path)
    return entry.fs_type if entry else None
