"""From a file or a URL to a Config: reading the file safely, parsing, and building every section."""

from __future__ import annotations

import os
import re
import stat
import tomllib

from mountfs.config.azure import azure_section
from mountfs.config.gcs import gcs_section
from mountfs.config.general import cache_section, read_section, retry_section, write_section
from mountfs.config.model import Config, MiB, MountConfig
from mountfs.config.mounts import direct_access_section, mounts_section, path_substitution_section
from mountfs.config.reader import Reader, Table
from mountfs.config.s3 import s3_section
from mountfs.config.toml_text import toml_error_hint
from mountfs.config.urls import parse_url, shown_url
from mountfs.config.values import InvalidValue, format_size
from mountfs.errors import ConfigError, ConfigErrors

_TOP_KEYS = (
    "cache", "read", "write", "retry", "mount", "direct_access", "path_substitution", "s3", "gcs", "azure",
)  # fmt: skip


def build(r: Reader, doc: Table, source: str) -> Config:
    expanded = r.expand(doc, ())
    assert isinstance(expanded, dict)
    root = r.table(expanded, (), _TOP_KEYS, "")
    return Config(
        source=source,
        cache=cache_section(r, root),
        read=read_section(r, root),
        write=write_section(r, root),
        retry=retry_section(r, root),
        mounts=mounts_section(r, root),
        direct_access=direct_access_section(r, root),
        path_substitution=path_substitution_section(r, root),
        s3=s3_section(r, root),
        gcs=gcs_section(r, root),
        azure=azure_section(r, root),
    )


def _load_text(text: str, source: str) -> Config:
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ConfigErrors([ConfigError(
            "arrays or tables are nested too deeply to read", file=source
        )]) from None  # fmt: skip
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        line: int | None = None
        hint: str | None = None
        if match:
            line = int(match.group(1))
            message = f"TOML syntax error at column {match.group(2)}: {message[: match.start()]}"
            lines = text.splitlines()
            hint = toml_error_hint(lines[line - 1]) if line <= len(lines) else None
        else:
            message = f"TOML syntax error: {message}"
        raise ConfigErrors([ConfigError(message, file=source, line=line, hint=hint)]) from None
    loader = Reader(source, text)
    try:
        config = build(loader, doc, source)
    except RecursionError:  # tomllib took it, but walking it (${VAR} expansion) did not
        raise ConfigErrors([ConfigError(
            "arrays or tables are nested too deeply to read", file=source
        )]) from None  # fmt: skip
    if loader.errors:  # in file order, as an editor would show them; those without a line last
        raise ConfigErrors(sorted(loader.errors, key=lambda e: (e.line is None, e.line or 0)))
    return config


MAX_CONFIG_SIZE = 1 * MiB
"""A config is a few KiB; reading more would let /dev/zero or a wrong path exhaust memory."""


def _read_config_file(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_SIZE. Opened without blocking, so a FIFO or a
    device is refused at once instead of waiting for a writer or reading forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError(
            "no such file", file=path, hint="expected a TOML config file, or a URL such as s3://bucket/prefix"
        )]) from None  # fmt: skip
    except IsADirectoryError:
        raise ConfigErrors([ConfigError("is a directory, not a config file", file=path)]) from None
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read: {exc.strerror}", file=path)]) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigErrors([ConfigError("is a directory, not a config file", file=path)])
        if not stat.S_ISREG(mode):
            raise ConfigErrors([ConfigError("is not a regular file (a pipe or a device?)", file=path)])
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CONFIG_SIZE + 1)
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read: {exc.strerror}", file=path)]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_SIZE:
        raise ConfigErrors([ConfigError(
            f"is larger than {format_size(MAX_CONFIG_SIZE)}, too large for a config file", file=path
        )])  # fmt: skip
    return data


def load_config(path: str) -> Config:
    """Load a TOML config file; every problem found is raised together as one ConfigErrors."""
    data = _read_config_file(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigErrors([ConfigError("not UTF-8 text", file=path, line=line)]) from None
    return _load_text(text, path)


def config_from_url(url: str) -> Config:
    """`mountfs s3://bucket/prefix /mnt`: the bucket itself is the mount root, everything else default."""
    try:
        store = parse_url(url)
    except InvalidValue as exc:
        raise ConfigErrors([ConfigError(exc.message, file=shown_url(url), hint=exc.hint)]) from None
    return Config(source=url, mounts=(MountConfig("", store, False),))


SECRET_ENVIRONMENT = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
)  # fmt: skip


def secret_values(config: Config) -> list[str]:
    """Every secret the daemon holds (from the config and the environment), for its log to hide:
    SDKs log signed headers at debug level, a session token among them. Access key IDs are not
    secret (they name the key) and stay visible for debugging; very short values would hide too much."""
    values: list[str | None] = [config.s3.secret, config.s3.token]
    for cred in config.s3.credentials:
        values += [cred.secret, cred.token]
    for json_text in [config.gcs.credentials_json, *(c.credentials_json for c in config.gcs.credentials)]:
        if json_text and json_text.lstrip().startswith("{"):  # the key itself, not the path of its file
            values.append(json_text)
    for container in config.azure.containers:
        values += [container.account_key, container.connection_string, container.sas_token]
    values += [os.environ.get(name) for name in SECRET_ENVIRONMENT]
    for text in list(values):  # a connection string's key or signature may be logged on its own
        for part in (text or "").split(";"):
            name, _, value = part.partition("=")
            if name.strip() in ("AccountKey", "SharedAccessSignature"):
                values.append(value)
    found = {v for v in values if v and len(v) >= 6}
    return sorted(found, key=len, reverse=True)  # the longest first, so no part of one is left


_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEME_START = re.compile(r"(s3|gs|az|file):", re.IGNORECASE)


def load_source(source: str) -> Config:
    """SOURCE on the command line is a URL or a config file; "s3:bucket" (a URL typo) is read as a URL
    unless a file of that name exists, so the user gets the URL's error rather than "no such file"."""
    if _URL_START.match(source) or (_SCHEME_START.match(source) and not os.path.exists(source)):
        return config_from_url(source)
    return load_config(source)
