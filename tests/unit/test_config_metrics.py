"""[metrics] and -o metrics=: the address the daemon serves Prometheus text on, checked before mounting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mountfs.config import load_config
from mountfs.config.metrics import parse_listen
from mountfs.errors import ConfigErrors
from mountfs.mount import MountSetupError, parse_options

MOUNT = '[[mount]]\npath = "a"\nurl = "file:///srv/a"\n'


@pytest.mark.parametrize(("text", "expected"), [
    ("9464", "127.0.0.1:9464"),  # a bare port: loopback
    ("127.0.0.1:9464", "127.0.0.1:9464"),
    ("0.0.0.0:9464", "0.0.0.0:9464"),
    ("[::1]:9464", "[::1]:9464"),
    ("metrics.internal:0", "metrics.internal:0"),
    ("unix:/run/mountfs/train.prom", "unix:/run/mountfs/train.prom"),
])
def test_listen_addresses(text: str, expected: str) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    (":9464", "names no host"),
    ("::1:9464", "in brackets"),
    ("[nope]:1", "not an IPv6 address"),
    ("host:65536", "from 0 to 65535"),
    ("host:", "from 0 to 65535"),
    ("a b:1", "not a host name"),
    ("localhost", "not HOST:PORT"),
    ("unix:metrics.sock", "not absolute"),
])
def test_bad_listen_addresses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen(text)


def test_metrics_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MOUNT)
    assert load_config(str(path)).metrics.listen is None
    path.write_text(MOUNT + '[metrics]\nlisten = "9100"\n')
    assert load_config(str(path)).metrics.listen == "127.0.0.1:9100"
    path.write_text(MOUNT + '[metrics]\nlisten = "x:y"\nport = 1\n')
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path))
    shown = [e.format() for e in info.value.errors]
    assert any(":5: metrics.listen: port 'y'" in line for line in shown), shown
    assert any("metrics.port" in line for line in shown), shown


def test_metrics_mount_option() -> None:
    assert parse_options(["metrics=9464"]).metrics == "127.0.0.1:9464"
    assert parse_options(["ro"]).metrics is None
    with pytest.raises(MountSetupError, match="bad mount option metrics=nope: 'nope' is not HOST:PORT"):
        parse_options(["metrics=nope"])
