"""Where the daemon's log lines go, and in what form.

Every line names its time, level and mount point, so the lines of several daemons in one file or
journal can be told apart. A log file rotates by size (`-o log_size=`, 10 MiB by default, five old
files kept), so a daemon that runs for months cannot fill its disk. `-o log_format=json` writes one
JSON object per line for log shippers. Under systemd (JOURNAL_STREAM names our stderr) each line
carries its syslog priority as `<N>`, which journald turns into the entry's priority. Secrets are
replaced by *** in whatever form is written, tracebacks included.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import sys
import time

from mountfs.errors import printable, without_secrets

LOG_SIZE = 10 * 1024 * 1024  # bytes of a log file before it rotates
LOG_BACKUPS = 5  # rotated files kept (FILE.1 ... FILE.5)
FORMATS = ("text", "json")

# syslog priorities of Python's levels, as sd-daemon(3) prefixes want them
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def _redact(text: str, secrets: list[str]) -> str:
    """`text` without the configured secrets, nor the signatures, key ids and tokens an SDK's debug
    lines show (request headers, presigned URLs)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return without_secrets(text)


class _PrivateFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file created readable by its owner only: debug lines name objects and requests."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return io.TextIOWrapper(io.FileIO(fd, "a"), encoding=self.encoding or "utf-8", errors=self.errors)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL [MOUNTPOINT] LOGGER: MESSAGE`; with `journal`, `<PRIORITY>` first and no time
    (the journal keeps its own)."""

    def __init__(self, mountpoint: str, secrets: list[str], journal: bool = False) -> None:
        fmt = "%(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        if mountpoint:
            fmt = fmt.replace("%(name)s", f"[{mountpoint.replace('%', '%%')}] %(name)s", 1)
        super().__init__(fmt)
        self.secrets = secrets
        self.journal = journal

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message on one line, control characters escaped: an object key holding a newline
        cannot forge a line of its own (a traceback, appended after, keeps its lines)."""
        message = record.message
        record.message = printable(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        text = _redact(super().format(record), self.secrets)
        if self.journal:
            priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
            # journald reads one entry per line: a traceback's lines each keep the priority
            text = "\n".join(f"<{priority}>{line}" for line in text.split("\n"))
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, mount, logger, message; `exception`
    holds a traceback, so an event stays one line."""

    def __init__(self, mountpoint: str, secrets: list[str]) -> None:
        super().__init__()
        self.mountpoint = mountpoint
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "mount": self.mountpoint,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # before encoding: JSON escapes a secret holding a quote or a backslash
        return json.dumps({k: _redact(v, self.secrets) for k, v in entry.items()}, ensure_ascii=False)


def under_journal() -> bool:
    """Is our stderr the journal stream systemd gave us (JOURNAL_STREAM=DEV:INODE)?"""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
        device, inode = (int(part) for part in stream.split(":"))
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup(mountpoint: str, log_file: str | None, secrets: list[str], *, debug: bool = False,
          log_format: str = "text", max_bytes: int = LOG_SIZE) -> None:
    """Send the root logger's lines to `log_file` (rotated by size) or to stderr."""
    handler: logging.Handler
    if log_file:
        handler = _PrivateFileHandler(log_file, maxBytes=max_bytes, backupCount=LOG_BACKUPS)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(mountpoint, secrets))
    else:
        handler.setFormatter(TextFormatter(mountpoint, secrets, journal=log_file is None and under_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
