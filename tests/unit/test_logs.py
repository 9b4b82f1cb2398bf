"""The daemon's log lines: time, level and mount point in each; a log file rotated by size; JSON lines
for shippers; syslog priorities for the journal; secrets hidden in every form."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountfs import logs
from mountfs.mount import MountSetupError, parse_options

SECRET = 'sEcReT/va"lue+x\\yz'  # JSON escapes the quote and the backslash


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_log_file_rotates_by_size_and_names_the_mount(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "daemon.log"
    logs.setup("/mnt/train", str(path), [SECRET], max_bytes=4096)
    log = logging.getLogger("mountfs.test")
    for i in range(400):
        log.info("event %d on data/file-%d.bin with %s", i, i, SECRET)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["daemon.log", *(f"daemon.log.{n}" for n in range(1, logs.LOG_BACKUPS + 1))], files
    for name in files:
        text = (tmp_path / name).read_text()
        assert len(text) <= 4096 and SECRET not in text
    last = path.read_text().splitlines()[-1]
    date, _clock, level, mount, rest = last.split(" ", 4)
    assert len(date) == 10 and level == "INFO" and mount == "[/mnt/train]", last
    assert rest == "mountfs.test: event 399 on data/file-399.bin with ***", last


def test_json_lines_one_per_event_tracebacks_included(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "daemon.log"
    logs.setup("/mnt/x", str(path), [SECRET], log_format="json")
    log = logging.getLogger("mountfs.fs")
    log.warning("read of a/b failed: %s", "token " + SECRET)
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        log.exception("handler failed")
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and SECRET not in path.read_text()
    first, second = map(json.loads, lines)
    assert first["level"] == "WARNING" and first["mount"] == "/mnt/x" and first["logger"] == "mountfs.fs"
    assert first["message"] == "read of a/b failed: token ***" and first["time"].endswith("Z")
    assert second["message"] == "handler failed" and "RuntimeError: boom ***" in second["exception"]


def test_journal_lines_carry_their_priority(tmp_path: Path, restore_logging: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stderr"
    with open(out, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journal()
        logs.setup("/mnt/j", None, [], debug=True)
        log = logging.getLogger("mountfs.mount")
        log.debug("d")
        log.info("i")
        log.warning("w")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("e")
    lines = out.read_text().splitlines()
    assert lines[:5] == [
        "<7>[/mnt/j] mountfs.mount: d", "<6>[/mnt/j] mountfs.mount: i", "<4>[/mnt/j] mountfs.mount: w",
        "<3>[/mnt/j] mountfs.mount: e", "<3>Traceback (most recent call last):"]
    assert lines[-1] == "<3>RuntimeError: boom" and all(line.startswith("<3>") for line in lines[4:])
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream: not ours
    assert not logs.under_journal()


def test_log_options() -> None:
    options = parse_options(["log_format=json,log_size=1MiB"])
    assert (options.log_format, options.log_size) == ("json", 1 << 20)
    assert parse_options([]).log_size == logs.LOG_SIZE
    with pytest.raises(MountSetupError, match="log_format=xml: expected text or json"):
        parse_options(["log_format=xml"])
    with pytest.raises(MountSetupError, match="log_size=10: at least 4KiB"):
        parse_options(["log_size=10"])
    with pytest.raises(MountSetupError, match='bad mount option log_size=-1: invalid size "-1"'):
        parse_options(["log_size=-1"])
    with pytest.raises(MountSetupError, match="bad mount option block_size=lots: invalid size"):
        parse_options(["block_size=lots"])


AUTH_HEADER = ("{'Authorization': b'AWS4-HMAC-SHA256 "
               "Credential=AKIAKEYID123/20261204/us-east-1/s3/aws4_request, "
               "SignedHeaders=host;x-amz-date, Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978', "
               "'X-Amz-Date': b'20261204T000000Z'}")
PRESIGNED = "GET https://h/b/k?X-Amz-Credential=AKIAKEYID123%2F2026&X-Amz-Signature=abcdef0123&sv=1&sig=c2lnbmF0dXJl"


@pytest.mark.parametrize("log_format", logs.FORMATS)
def test_debug_lines_hide_request_signatures_and_key_ids(tmp_path: Path, restore_logging: None,
                                                         log_format: str) -> None:
    path = tmp_path / "daemon.log"
    logs.setup("/mnt/d", str(path), [], debug=True, log_format=log_format)
    log = logging.getLogger("botocore.endpoint")
    log.debug("Sending http request: <AWSPreparedRequest headers=%s>", AUTH_HEADER)
    log.debug("url %s", PRESIGNED)
    log.debug("Authorization: Bearer ya29.tokenvalue-x and SharedKey acct:c2hhcmVka2V5")
    text = path.read_text()
    for secret in ("AKIAKEYID123", "0f1e2d3c4b5a6978", "abcdef0123", "c2lnbmF0dXJl", "ya29.tokenvalue",
                   "c2hhcmVka2V5"):
        assert secret not in text, (secret, text)
    assert "Credential=***/20261204/us-east-1" in text and "Signature=***" in text, text
    assert "SignedHeaders=host;x-amz-date" in text and "sv=1" in text, text
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_key_with_a_newline_cannot_forge_a_text_line(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "daemon.log"
    logs.setup("/mnt/f", str(path), [])
    log = logging.getLogger("mountfs.fs")
    key = "inj\n2026-12-04 00:00:00,000 CRITICAL [mnt] fake: FORGED\x1b[2J"
    log.warning("read of %s failed", key)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed on %s", key)
    lines = path.read_text().splitlines()
    assert lines[0].endswith(r"of inj\n2026-12-04 00:00:00,000 CRITICAL [mnt] fake: FORGED\x1b[2J failed")
    assert not any(line.startswith("2026-12-04 00:00:00") for line in lines), lines
    assert lines[1].endswith("FORGED\\x1b[2J") and lines[2] == "Traceback (most recent call last):", lines
    assert lines[-1] == "RuntimeError: boom"
