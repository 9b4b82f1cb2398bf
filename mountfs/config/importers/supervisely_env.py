"""Supervisely's `.env` (the docker env-file of its instance, found with `supervisely where`): the
storage it keeps its data in, mounted whole, one directory per bucket.

`STORAGE_PROVIDER`:
- `minio` (any S3): `STORAGE_ENDPOINT` and `STORAGE_PORT`; https when the port is 443 or the endpoint
  is written with https://, plain http otherwise (MinIO's :9000). `s3.amazonaws.com` is AWS itself.
  `STORAGE_ACCESS_KEY`/`STORAGE_SECRET_KEY`, or `STORAGE_IAM_ROLE`: no key, the instance's role through
  boto3's credential chain. The mount is the whole endpoint (`s3://host:port/`, `s3://` for AWS): its
  buckets are listed at mount time.
- `azure`: `STORAGE_ACCESS_KEY` is the account name, `STORAGE_SECRET_KEY` its key; `STORAGE_ENDPOINT`
  (https://ACCOUNT.blob.core.windows.net, or another account URL). The mount is every container.
- `google`: `STORAGE_CREDENTIALS_PATH` (the key file), `STORAGE_ENDPOINT` (storage.googleapis.com or an
  emulator). The mount is every bucket of the key's project.
- `http` (the default: Supervisely's own disk): `DATA_PATH` (default /supervisely/data); its
  `storage` folder holds the buckets as folders, mounted as one file:// folder.

`CACHE_STORAGE_SIZE` (nginx sizes: 10g) is [cache] max_size, `CACHE_STORAGE_EXPIRES` (7d) [cache]
expiry. Other STORAGE_* and CACHE_* keys are noted; the rest of the file (JUPYTER_*, ...) is not about
storage and is noted once.

The `docker-compose.override.yml` beside the file is read too, as Supervisely's own guide has users write
it: the CACHE_* variables of its `proxy` service's environment win over the .env's, and a key file the
`http-storage` service's volumes mount (`/host/key.json:/gcs.json:ro`) is read from the host path that
STORAGE_CREDENTIALS_PATH (a path inside the container) is mounted from.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

import yaml  # type: ignore[import-untyped]

from mountfs.config.importers import Imported, Note
from mountfs.config.toml_text import Path
from mountfs.errors import printable

if TYPE_CHECKING:
    from mountfs.config.model import Config, StoreUrl

NAME = "supervisely_env"
FORMAT = "Supervisely .env"
PROVIDERS = ("minio", "azure", "google", "http")
DEFAULT_DATA_PATH = "/supervisely/data"
AWS_HOSTS = ("s3.amazonaws.com",)

_Get = Callable[[str], str | None]
_Origin = Callable[[Path, str], None]
_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_USED = ("STORAGE_PROVIDER", "STORAGE_ENDPOINT", "STORAGE_PORT", "STORAGE_ACCESS_KEY", "STORAGE_SECRET_KEY",
         "STORAGE_CREDENTIALS_PATH", "STORAGE_IAM_ROLE", "CACHE_STORAGE_SIZE", "CACHE_STORAGE_EXPIRES",
         "DATA_PATH")


def parse_env(text: str) -> tuple[dict[str, tuple[str, int]], list[tuple[int, str]]]:
    """KEY=VALUE lines as docker compose reads them: comments, blank lines, optional quotes, an inline
    " #" comment after an unquoted value. (KEY -> (value, line)), and the lines that are none of these
    (or whose quoted value is not closed, which docker compose refuses too)."""
    values: dict[str, tuple[str, int]] = {}
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if not match:
            bad.append((number, line))
            continue
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
            value = value[1:-1]
        elif value[:1] in ("\"", "'") and value[0] in value[1:]:  # a quoted value and a comment after it
            value = value[1:value.index(value[0], 1)]
        elif value[:1] in ("\"", "'"):  # docker compose refuses it too: never part of a secret
            bad.append((number, line))
            continue
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[name] = (value, number)
    return values, bad


OVERRIDE = "docker-compose.override.yml"


class Compose:
    """What the docker-compose.override.yml beside a Supervisely file says about storage: the `proxy`
    service's environment and where the `http-storage` service's volumes come from on the host."""

    def __init__(self, beside: str, out: Imported) -> None:
        self.path = os.path.join(os.path.dirname(os.path.abspath(beside)), OVERRIDE)
        self.environment: dict[str, str] = {}
        self.volumes: list[tuple[str, str]] = []  # (container path, host path)
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = yaml.safe_load(f.read(1 << 20))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            out.notes.append(Note(self.path, f"cannot be read ({type(exc).__name__}): its services' "
                                  "settings are not taken"))
            return
        services = doc.get("services") if isinstance(doc, dict) else None
        if not isinstance(services, dict):
            return
        proxy, storage = services.get("proxy"), services.get("http-storage")
        environment = proxy.get("environment") if isinstance(proxy, dict) else None
        if isinstance(environment, list):  # ["NAME=value", ...]
            environment = dict(str(e).partition("=")[::2] for e in environment)
        if isinstance(environment, dict):
            self.environment = {str(k): str(v) for k, v in environment.items() if v is not None}
        volumes = storage.get("volumes") if isinstance(storage, dict) else None
        for volume in volumes if isinstance(volumes, list) else []:
            if isinstance(volume, dict):  # the long syntax
                host, target = volume.get("source"), volume.get("target")
            else:
                host, _, rest = str(volume).partition(":")
                target = rest.split(":")[0]
            # a bind mount (a named volume's source is a bare name); relative to the compose file
            if isinstance(host, str) and host.startswith(("/", ".", "~")) and isinstance(target, str):
                host = os.path.join(os.path.dirname(self.path), os.path.expanduser(host))
                self.volumes.append((target.rstrip("/") or "/", host))

    def host_path(self, inside: str) -> str | None:
        """The host's path of a path inside the http-storage container, if a volume mounts it."""
        for target, host in sorted(self.volumes, key=lambda v: -len(v[0])):
            if inside == target:
                return os.path.normpath(host)
            if inside.startswith(target.rstrip("/") + "/"):
                return os.path.normpath(os.path.join(host, inside[len(target.rstrip("/")) + 1:]))
        return None


def looks_like(path: str, text: str) -> bool:
    """KEY=VALUE lines (and comments), and a STORAGE_PROVIDER or a .env name: never TOML, whose
    mountfs keys are all in [tables], dotted or inline tables."""
    if any(line.lstrip().startswith("[") for line in text.splitlines()):
        return False
    values, bad = parse_env(text)
    if not values:
        return False
    name = os.path.basename(path)
    # mostly KEY=VALUE lines: the others are then this file's errors, not TOML's
    named = "STORAGE_PROVIDER" in values or name == ".env" or name.endswith(".env")
    return named and len(bad) <= len(values)


def escape(value: str) -> str:
    """A value as the reader takes it literally: "${" is the start of a reference there."""
    return value.replace("${", "$${")


def split_endpoint(endpoint: str, port: str | None) -> tuple[str, int | None, bool | None]:
    """(host, port or None, secure or None when the text does not say) of "host", "host:port" or
    "https://host:port/"."""
    text = endpoint.strip()
    secure: bool | None = None
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        secure = parts.scheme.lower() == "https"
        host = parts.hostname or ""
        number = parts.port
    else:
        host, sep, tail = text.rstrip("/").rpartition(":")
        if not sep or not tail.isdigit():
            host, number = text.rstrip("/"), None
        else:
            number = int(tail)
    if port:
        number = int(port)
    return host, number, secure


def endpoint_problem(endpoint: str) -> tuple[str, str] | None:
    """(message, hint) when `split_endpoint` cannot take the endpoint URL apart (a bad port or IPv6
    address), or it carries a user and password, which the host:port taken from it would silently
    drop; the secret is not shown."""
    if "://" not in endpoint:
        return None
    scheme, _, rest = endpoint.strip().partition("://")
    netloc = rest.split("/", 1)[0]
    shown = f"{scheme}://***@{netloc.rpartition('@')[2]}" if "@" in netloc else endpoint.strip()
    if "@" in netloc:
        return (f'"{shown}" carries credentials',
                "give the host (and port) alone; the key goes in the access and secret keys")
    try:
        _ = urllib.parse.urlsplit(endpoint.strip()).port  # raises on a bad port or IPv6 address
    except ValueError as exc:
        return f'"{printable(shown)}" is not an endpoint URL ({exc})', "e.g. https://host:port"
    return None


def s3_endpoint(host: str, port: int | None, secure: bool | None) -> tuple[str | None, bool]:
    """("host:port" or None for AWS itself, https?): https on 443, or where the endpoint says so."""
    if host.lower() in AWS_HOSTS and port in (None, 443):
        return None, True
    if port is None:
        port = 443 if secure is not False else 80
    return f"{host}:{port}", secure if secure is not None else port == 443


def import_text(path: str, text: str) -> Imported:
    values, bad = parse_env(text)
    out = Imported(FORMAT, {})
    for number, line in bad:
        match = _LINE.fullmatch(line)
        if match:  # KEY="value without its closing quote; the value may be a secret: not shown
            out.errors.append((f"{match.group(1)} (line {number})", "the quote that starts the value is "
                               "not closed", "close it, or write the value without quotes"))
        else:
            out.errors.append((f"line {number}", "is not KEY=VALUE", "a .env line is NAME=value"))

    compose = Compose(path, out)
    for name, value in compose.environment.items():
        if name.startswith("CACHE_"):  # what the proxy is given wins over the .env
            values[name] = (value, 0)

    def get(name: str) -> str | None:
        value = values.get(name, ("", 0))[0]
        return value or None

    def origin(doc_path: Path, name: str) -> None:
        line = values.get(name, ("", -1))[1]
        out.origins[doc_path] = (name if line < 0 else f"{name} (line {line})" if line else
                                 f"{name} ({compose.path} services.proxy.environment)")

    doc = out.doc
    cache: dict[str, object] = {}
    if get("CACHE_STORAGE_SIZE"):
        cache["max_size"] = get("CACHE_STORAGE_SIZE")
        origin(("cache", "max_size"), "CACHE_STORAGE_SIZE")
    if get("CACHE_STORAGE_EXPIRES"):
        cache["expiry"] = get("CACHE_STORAGE_EXPIRES")
        origin(("cache", "expiry"), "CACHE_STORAGE_EXPIRES")
    if cache:
        doc["cache"] = cache
    provider = (get("STORAGE_PROVIDER") or "http").lower()
    mount: dict[str, object] = {"path": ""}
    origin(("mount", 0), "STORAGE_PROVIDER")
    if provider == "minio":
        _minio(get, out, mount, origin)
    elif provider == "azure":
        _azure(get, out, mount, origin)
    elif provider == "google":
        _google(get, out, mount, origin, compose)
    elif provider == "http":
        data_path = get("DATA_PATH") or DEFAULT_DATA_PATH
        if not data_path.startswith("/"):
            out.errors.append(("DATA_PATH", f'"{data_path}" is not an absolute path', None))
        mount["url"] = "file://" + escape(os.path.join(data_path, "storage"))
        origin(("mount", 0, "url"), "DATA_PATH")
        out.notes.append(Note("STORAGE_PROVIDER", "http: Supervisely's own disk, the buckets are the "
                              f"folders of {os.path.join(data_path, 'storage')}", "mount"))
    else:
        out.errors.append(("STORAGE_PROVIDER", f'"{provider}" is not a storage provider Supervisely has',
                           f"one of {', '.join(PROVIDERS)}"))
    if "url" in mount:
        doc["mount"] = [mount]
    _notes(values, out)
    return out


def _minio(get: _Get, out: Imported, mount: dict[str, object], origin: _Origin) -> None:
    endpoint = get("STORAGE_ENDPOINT")
    if endpoint is None:
        out.errors.append(("STORAGE_ENDPOINT", "required with STORAGE_PROVIDER=minio",
                           "e.g. STORAGE_ENDPOINT=s3.amazonaws.com and STORAGE_PORT=443"))
        return
    port = get("STORAGE_PORT")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        out.errors.append(("STORAGE_PORT", f'"{port}" is not a port number (1 to 65535)', None))
        return
    problem = endpoint_problem(endpoint)
    if problem is not None:
        out.errors.append(("STORAGE_ENDPOINT", *problem))
        return
    host, number, secure = split_endpoint(endpoint, port)
    host_port, https = s3_endpoint(host, number, secure)
    s3: dict[str, object] = {}
    key, secret, role = get("STORAGE_ACCESS_KEY"), get("STORAGE_SECRET_KEY"), get("STORAGE_IAM_ROLE")
    if role:
        out.notes.append(Note("STORAGE_IAM_ROLE", f"{role}: the instance's role, through boto3's "
                              "credential chain (instance metadata); no key is read", "s3"))
    if host_port is None:
        mount["url"] = "s3://"
        if role or not key:
            s3["use_credentials_chain"] = True
        else:
            s3["key"], s3["secret"] = escape(key), escape(secret or "")
            origin(("s3", "key"), "STORAGE_ACCESS_KEY")
            origin(("s3", "secret"), "STORAGE_SECRET_KEY")
    else:
        mount["url"] = f"s3://{host_port}/"
        scheme = "https" if https else "http"
        s3["endpoint"] = f"{scheme}://{host_port}"  # for links naming only the bucket: s3://bucket/key
        entry: dict[str, object] = {"host": host_port, "secure": https}
        if key and not role:
            entry["key"], entry["secret"] = escape(key), escape(secret or "")
            origin(("s3", "credentials", 0, "key"), "STORAGE_ACCESS_KEY")
            origin(("s3", "credentials", 0, "secret"), "STORAGE_SECRET_KEY")
        s3["credentials"] = [entry]
        origin(("s3", "endpoint"), "STORAGE_ENDPOINT")
        origin(("s3", "credentials", 0, "host"), "STORAGE_ENDPOINT")
    origin(("mount", 0, "url"), "STORAGE_ENDPOINT")
    out.doc["s3"] = s3


def _azure(get: _Get, out: Imported, mount: dict[str, object], origin: _Origin) -> None:
    account, key, endpoint = get("STORAGE_ACCESS_KEY"), get("STORAGE_SECRET_KEY"), get("STORAGE_ENDPOINT")
    if account is None:
        out.errors.append(("STORAGE_ACCESS_KEY", "required with STORAGE_PROVIDER=azure: the storage "
                           "account's name", None))
        return
    entry: dict[str, object] = {"account_name": escape(account)}
    origin(("azure", "containers", 0, "account_name"), "STORAGE_ACCESS_KEY")
    if key:
        entry["account_key"] = escape(key)
        origin(("azure", "containers", 0, "account_key"), "STORAGE_SECRET_KEY")
    if endpoint and endpoint.rstrip("/").lower() != f"https://{account}.blob.core.windows.net".lower():
        entry["endpoint"] = escape(endpoint.rstrip("/"))
        origin(("azure", "containers", 0, "endpoint"), "STORAGE_ENDPOINT")
    out.doc["azure"] = {"containers": [entry]}
    mount["url"] = f"az://@{escape(account)}/"
    origin(("mount", 0, "url"), "STORAGE_ACCESS_KEY")


def _google(get: _Get, out: Imported, mount: dict[str, object], origin: _Origin, compose: Compose) -> None:
    gcs: dict[str, object] = {}
    credentials, endpoint = get("STORAGE_CREDENTIALS_PATH"), get("STORAGE_ENDPOINT")
    host = compose.host_path(credentials) if credentials else None
    if credentials and host:
        out.notes.append(Note("STORAGE_CREDENTIALS_PATH", f"{credentials} is the http-storage container's "
                              f"path: read from {host}, which {compose.path} mounts there", "gcs"))
        credentials = host
    if credentials:
        gcs["credentials_json"] = escape(credentials)
        origin(("gcs", "credentials_json"), "STORAGE_CREDENTIALS_PATH")
    if endpoint and endpoint.strip().rstrip("/").lower() not in (
            "storage.googleapis.com", "https://storage.googleapis.com"):
        gcs["endpoint"] = escape(endpoint if "://" in endpoint else "https://" + endpoint)
        origin(("gcs", "endpoint"), "STORAGE_ENDPOINT")
    if gcs:
        out.doc["gcs"] = gcs
    mount["url"] = "gs://"


def _notes(values: dict[str, tuple[str, int]], out: Imported) -> None:
    others = []
    for name in values:
        if name in _USED:
            continue
        if name.startswith(("STORAGE_", "CACHE_")):
            out.notes.append(Note(name, "a Supervisely setting mountfs has no use for"))
        else:
            others.append(name)
    if others:
        out.notes.append(Note(", ".join(others), "not about storage; ignored"))




def credentials_hint(store: str, config: Config, url: StoreUrl, entry: int | None) -> str:
    """What to set in the .env when the storage finds no credentials: its own variables."""
    where = f" in {config.settings_source}"
    if store == "gcs":
        return (f"set STORAGE_CREDENTIALS_PATH (the key file){where}, or GOOGLE_APPLICATION_CREDENTIALS in "
                "mountfs's environment")
    if any(note.startswith("STORAGE_IAM_ROLE:") for note in config.notes):
        return (f"STORAGE_IAM_ROLE is set{where}: the instance's role, which boto3's credential chain "
                "did not find (no instance metadata, AWS_ACCESS_KEY_ID or AWS_PROFILE); or set "
                "STORAGE_ACCESS_KEY and STORAGE_SECRET_KEY instead")
    return (f"set STORAGE_ACCESS_KEY and STORAGE_SECRET_KEY{where}, or STORAGE_IAM_ROLE for the "
            "instance's role")
