"""Secrets stay secret: a mount with known S3 credentials, at debug log level, is read, written and
asked about in every way a user can (status, --json, cache stats, /metrics, ps, /proc/PID/cmdline), and fed
bad inputs; none of it, nor the daemon's log, shows the secret key or the session token."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from tests.fuse.test_metrics import scrape
from tests.servers import S3Server

if TYPE_CHECKING:
    from conftest import Mounter, Runner

KEY_ID = "AKIAMOUNTFSSECRETTEST"
SECRET = "mOuNtFs/sEcReT+wJalrXUtnFEMIK7MDENG"
TOKEN = "FwoGZXIvYXdzTOKENmountfs/secret+token"
SECRETS = (SECRET, TOKEN, SECRET.split("/")[0], TOKEN.split("/")[0])


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def write_config(path: Path, host_port: str, bucket: str, secret_line: str = f'secret = "{SECRET}"') -> str:
    path.write_text(
        f'[[mount]]\npath = "data"\nurl = "s3://{host_port}/{bucket}"\n\n'
        f'[[s3.credentials]]\nhost = "{host_port}"\nkey = "{KEY_ID}"\n{secret_line}\n'
        f'token = "{TOKEN}"\nsecure = false\n'
        '[retry]\nattempts = 2\nbase_delay = "10ms"\nmax_delay = "20ms"\nbudget = "2s"\n'
    )
    return str(path)


def test_no_secret_in_logs_status_processes_or_errors(
    mounter: Mounter, mountfs: Runner, moto: S3Server, seaweedfs: S3Server, tmp_path: Path
) -> None:
    moto.create_bucket("secrets")
    moto.client().put_object(Bucket="secrets", Key="hello.txt", Body=b"hello\n")
    config = write_config(tmp_path / "good.toml", moto.host_port, "secrets")
    mount = mounter.mount(config, "debug", "metrics=127.0.0.1:0")
    seen: dict[str, str] = {}

    # use it: a read, a listing, a write that is uploaded, a miss
    assert Path(mount.join("data", "hello.txt")).read_bytes() == b"hello\n"
    assert "hello.txt" in os.listdir(mount.join("data"))
    Path(mount.join("data", "new.txt")).write_bytes(b"new\n")
    assert not os.path.exists(mount.join("data", "missing"))

    for args in (("status", mount.path), ("status", mount.path, "--json"), ("status",), ("status", "--json"),
                 ("cache", "stats", "--json", "--cache-dir", mount.cache_dir),
                 ("cache", "stats", "--cache-dir", mount.cache_dir)):  # fmt: skip
        result = mountfs(*args, timeout=60)
        assert result.returncode == 0, (args, result.stderr)
        seen[" ".join(args)] = result.stdout + result.stderr
    seen["/metrics"] = scrape(mountfs.status(mount)["metrics"])
    assert "mountfs_store_requests_total" in seen["/metrics"]
    assert mount.pid is not None
    seen["ps"] = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    assert str(mount.pid) in seen["ps"]
    for name in ("cmdline", "environ"):
        seen[f"/proc/PID/{name}"] = Path(f"/proc/{mount.pid}/{name}").read_bytes().decode(errors="replace")

    # bad inputs, each refused with a message
    bad_secret = write_config(tmp_path / "unquoted.toml", moto.host_port, "secrets", f"secret = {SECRET}")
    wrong_key = write_config(tmp_path / "wrong.toml", seaweedfs.host_port, "nosuchbucket")
    bad_key = tmp_path / "badkey.toml"
    bad_key.write_text(Path(config).read_text().replace(KEY_ID, KEY_ID + "/x"))
    url = f"s3://{KEY_ID}:{SECRET}@{moto.host_port}/secrets"
    for args in (("config", "check", bad_secret), ("config", "check", str(bad_key)),
                 (bad_secret, mounter.fresh_dir("mnt")), (wrong_key, mounter.fresh_dir("mnt")),
                 (url, mounter.fresh_dir("mnt")), ("config", "check", url),
                 ("recover", wrong_key, "-o", f"cache_dir={tmp_path / 'rc'}")):  # fmt: skip
        result = mountfs(*args, timeout=60)
        assert result.returncode != 0, (args, result.stdout)
        assert result.stderr.strip() and "Traceback" not in result.stderr, (args, result.stderr)
        seen[" ".join(args)] = result.stdout + result.stderr

    mounter.umount(mount)
    seen["daemon log"] = Path(mount.log).read_text(errors="replace")
    assert "DEBUG" in seen["daemon log"]  # the log really is at debug level
    shown = {where: text for where, text in seen.items() if leaks(text)}
    assert not shown, "\n\n".join(f"{where}:\n{text[-3000:]}" for where, text in shown.items())
