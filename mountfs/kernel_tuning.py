"""The kernel's settings of one FUSE mount that only root may raise: its readahead (read_ahead_kb
of the mount's backing device) and how many reads the kernel sends without waiting (the FUSE
connection's max_background, under /sys/fs/fuse/connections).

Each is best effort: a mount that cannot raise them works, only slower, and says so in its log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

FUSECTL = "/sys/fs/fuse/connections"
# The kernel's own default is 12 (congestion at 9): a reader that asks for many ranges at once
# (posix_fadvise WILLNEED, as pyarrow does for every column chunk it will read) then blocks in
# the kernel until most of them have been fetched, and starts using none before.
BACKGROUND_REQUESTS = 128


def raise_readahead(device: int, nbytes: int) -> None:
    """Let the kernel send large sequential reads (1 MiB requests instead of 128 KiB)."""
    path = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(max(nbytes // 1024, 128)))
    except OSError as exc:
        log.info("kernel readahead left as it is (%s: %s)", path, exc.strerror)


def connection_dir(device: int, root: str = FUSECTL) -> str:
    """The fusectl folder of the FUSE mount on `device` (st_dev): named by the kernel's dev_t."""
    return os.path.join(root, str((os.major(device) << 20) | os.minor(device)))


def raise_background_requests(device: int, count: int = BACKGROUND_REQUESTS, root: str = FUSECTL) -> bool:
    """Let the kernel have `count` reads (readahead, fadvise) outstanding with us, congested at
    three quarters of that. fusectl is mounted first where nobody has (systemd does at boot;
    containers do not). False if it could not be raised."""
    folder = connection_dir(device, root)
    if root == FUSECTL and not os.path.isdir(folder) and not _mount_fusectl():
        return False
    try:
        for name, value in (("max_background", count), ("congestion_threshold", count * 3 // 4)):
            with open(os.path.join(folder, name), "w") as f:
                f.write(str(value))
    except OSError as exc:
        log.info("kernel background reads left as they are (%s: %s)", folder, exc.strerror)
        return False
    return True


def _mount_fusectl() -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"fusectl", FUSECTL.encode(), b"fusectl", 0, None) != 0:
        error = ctypes.get_errno()
        log.info("kernel background reads left as they are (mount fusectl on %s: %s)", FUSECTL,
                 os.strerror(error))
        return False
    log.info("mounted fusectl on %s", FUSECTL)
    return True
