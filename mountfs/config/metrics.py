"""[metrics]: where the daemon serves its Prometheus text, checked here so that a typo is a config
error with its line, not a daemon that mounts and serves nothing."""

from __future__ import annotations

import ipaddress
import os
import re

from mountfs.config.model import MetricsConfig
from mountfs.config.reader import Reader, Table

_METRICS_KEYS = ("listen",)
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
LOOPBACK = "127.0.0.1"


def parse_listen(text: str) -> str:
    """"PORT" (on loopback), "HOST:PORT", "[IPV6]:PORT" or "unix:/absolute/path", in a normal form.

    Loopback unless a host is given: the figures say which buckets are busy, which is nobody's
    business off this machine unless the operator says so. Port 0 takes any free port."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not os.path.isabs(path):
            raise ValueError(f"unix socket path {path!r} is not absolute (e.g. unix:/run/mountfs/train.prom)")
        if "\0" in path:
            raise ValueError("unix socket path holds a NUL byte")
        return "unix:" + os.path.normpath(path)
    if text.isdigit():
        host, port = LOOPBACK, text
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} is not HOST:PORT, PORT or unix:/path (e.g. \"127.0.0.1:9464\")")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{host!r} is not an IPv6 address") from None
        elif not host:
            raise ValueError(f"{text!r} names no host (\"0.0.0.0:{port}\" listens on every interface)")
        elif ":" in host:
            raise ValueError(f"an IPv6 address goes in brackets: \"[{host}]:{port}\"")
        elif not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} is not a host name or an IP address")
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"


def split_listen(address: str) -> tuple[str, int]:
    """(host, port) of a normal-form TCP address from `parse_listen`."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def metrics_section(r: Reader, root: Table) -> MetricsConfig:
    path, t = r.sub(root, (), "metrics", _METRICS_KEYS)
    listen = r.str_(t, path, "listen")
    if listen is None:
        return MetricsConfig()
    try:
        return MetricsConfig(listen=parse_listen(listen))
    except ValueError as exc:
        r.value_error((*path, "listen"), exc)
        return MetricsConfig()
