"""Facts about other processes that several layers need."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie has exited for every purpose here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False
