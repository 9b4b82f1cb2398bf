"""Supervisely's `remote_links.yml`: the storages its Links plugin reads, each an entry with a provider,
its credentials and its buckets. Every bucket becomes a directory `PROVIDER/BUCKET`: `s3/...` for
`minio`, `azure/...`, `google/...`, and `fs/STORAGE-ID` for a folder of the server.

- `minio`: `endpoint` (s3.amazonaws.com is AWS itself; another host is an S3 server, https when
  `port` or the endpoint's own port is 443 or it is written with https://), `access_key`/`secret_key`
  or `iam_role` (the instance's role, through boto3's credential chain), `region`. Each bucket gets an
  [[s3.credentials]] entry with its endpoint, so a link `s3://bucket/key` finds its server too.
- `azure`: `access_key` is the account name, `secret_key` its key, `endpoint` its account URL.
- `google`: `credentials_path` (the key file), `endpoint` (storage.googleapis.com or an emulator). The
  path is inside Supervisely's http-storage container: a docker-compose.override.yml beside the yml
  that mounts the key file there (`/host/key.json:/secret_planes.json:ro`) says where it is on the host.
- `fs` (Supervisely's "File system" provider): `path` is the folder on the server, `buckets` its
  storage ids (the entry's own name when there is no `buckets`): `fs://ID/...` links are served from
  the folder through a [[path_substitution]] of `fs://ID` to `file://PATH`.
"""

from __future__ import annotations

import os
import tomllib
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped]

from mountfs.config.importers import Imported, Note
from mountfs.config.importers.supervisely_env import (
    Compose,
    endpoint_problem,
    escape,
    s3_endpoint,
    split_endpoint,
)

if TYPE_CHECKING:
    from mountfs.config.model import Config, StoreUrl

NAME = "supervisely_yaml"
FORMAT = "Supervisely remote_links.yml"
PROVIDERS = ("minio", "azure", "google", "fs")
DIRECTORY = {"minio": "s3", "azure": "azure", "google": "google", "fs": "fs"}
_KEYS = ("provider", "endpoint", "port", "access_key", "secret_key", "iam_role", "region", "credentials_path",
         "buckets", "path")


def _load(text: str) -> tuple[Any, str | None]:
    """(the document, None), or (None, the YAML error with its line)."""
    try:
        return yaml.safe_load(text), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return None, f"YAML syntax error at {where}{exc.problem or exc}"
    except RecursionError:
        return None, "YAML nested too deeply to read"
    except yaml.YAMLError as exc:
        return None, f"YAML syntax error: {exc}"


def looks_like(path: str, text: str) -> bool:
    """A YAML mapping of entries that each name a provider (no TOML or .env file is one), or a .yml
    file that names a provider but is not TOML (its errors are then this importer's: not YAML, not a
    mapping of storages, ...)."""
    if "provider" not in text:
        return False
    try:
        tomllib.loads(text)
        return False  # a TOML file (perhaps what `config import` printed, checked under this name)
    except tomllib.TOMLDecodeError:
        pass
    doc, error = _load(text)
    if error is not None:
        return path.endswith((".yml", ".yaml"))
    if not isinstance(doc, dict) or not doc:  # a .yml naming a provider: its error is the importer's
        return path.endswith((".yml", ".yaml")) and doc is not None
    entries = [isinstance(v, dict) and "provider" in v for v in doc.values()]
    return all(entries) or path.endswith((".yml", ".yaml"))


def import_text(path: str, text: str) -> Imported:
    out = Imported(FORMAT, {})
    doc, error = _load(text)
    if error is not None:
        hint = 'a value with ": " in it needs quotes' if "mapping values" in error else None
        out.errors.append(("(file)", error, hint))
        return out
    if not isinstance(doc, dict) or ("provider" in doc and not isinstance(doc["provider"], dict)):
        out.errors.append(("(file)", "is not a YAML mapping of storages", "each storage is NAME: with "
                           "its provider, endpoint, buckets, ... indented below it, as in Supervisely's "
                           "remote_links.yml"))
        return out
    mounts: list[dict[str, object]] = []
    s3_entries: list[dict[str, object]] = []
    azure_entries: list[dict[str, object]] = []
    gcs_entries: list[dict[str, object]] = []
    substitutions: list[dict[str, object]] = []
    gcs_endpoints: dict[str, str] = {}
    compose = Compose(path, out)
    for name, entry in doc.items():
        where = str(name)
        if not isinstance(entry, dict):
            out.errors.append((where, "expected a mapping with provider, endpoint, buckets, ...", None))
            continue
        for key in entry:
            if key not in _KEYS:
                out.notes.append(Note(f"{where}.{key}", "not a key of remote_links.yml; ignored"))
        provider = str(entry.get("provider", "")).lower()
        if provider not in PROVIDERS:
            out.errors.append((f"{where}.provider", f'"{entry.get("provider")}" is not a provider',
                               f"one of {', '.join(PROVIDERS)}"))
            continue
        strings: dict[str, str] = {}
        bad = False
        for key in _KEYS:
            value = entry.get(key)
            if key == "buckets" or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                out.errors.append((f"{where}.{key}", f"expected a string, got {type(value).__name__}", None))
                bad = True
            else:
                strings[key] = str(value)
        buckets = entry.get("buckets")
        if buckets is None and provider == "fs":
            buckets = [where]
        if not isinstance(buckets, list) or not buckets or not all(isinstance(b, str) and b for b in buckets):
            out.errors.append((f"{where}.buckets", "expected a list of bucket names", "buckets: [name, ...]"))
            continue
        if bad:
            continue
        buckets = list(dict.fromkeys(buckets))  # a bucket listed twice is one directory
        folder = DIRECTORY[provider]
        start = len(mounts)
        if provider == "minio":
            _minio(where, strings, buckets, mounts, s3_entries, out)
        elif provider == "azure":
            _azure(where, strings, buckets, mounts, azure_entries, out)
        elif provider == "google":
            credentials = strings.get("credentials_path")
            host = compose.host_path(credentials) if credentials else None
            if credentials and host:
                out.notes.append(Note(f"{where}.credentials_path", f"{credentials} is the http-storage "
                                      f"container's path: read from {host}, which {compose.path} mounts "
                                      "there", "gcs"))
                credentials = host
            endpoint = strings.get("endpoint", "storage.googleapis.com")
            if endpoint.rstrip("/").lower() not in ("storage.googleapis.com", "https://storage.googleapis.com"):
                gcs_endpoints[where] = endpoint if "://" in endpoint else "https://" + endpoint
            for bucket in buckets:
                mounts.append({"path": f"{folder}/{escape(bucket)}", "url": f"gs://{escape(bucket)}"})
                if credentials:
                    gcs_entries.append({"bucket": escape(bucket), "credentials_json": escape(credentials)})
                    out.origins[("gcs", "credentials", len(gcs_entries) - 1)] = where
                    out.origins[("gcs", "credentials", len(gcs_entries) - 1, "credentials_json")] = (
                        f"{where}.credentials_path")
        else:
            folder_path = strings.get("path")
            if not folder_path or not folder_path.startswith("/"):
                out.errors.append((f"{where}.path", "the fs provider needs path: the absolute folder "
                                   "on the server", "path: /data/datasets"))
                continue
            for storage_id in buckets:
                mounts.append({"path": f"fs/{escape(storage_id)}", "url": f"fs://{escape(storage_id)}"})
                substitutions.append({"registered_prefix": f"fs://{escape(storage_id)}",
                                      "local_prefix": "file://" + escape(os.path.normpath(folder_path))})
                out.origins[("path_substitution", len(substitutions) - 1)] = where
        for index in range(start, len(mounts)):
            out.origins[("mount", index)] = f"{where}.buckets"
            mounts[index]["optional"] = True  # as Supervisely, a bucket deleted since is no reason to
            # serve none of the others
    if len(set(gcs_endpoints.values())) > 1:
        out.errors.append((", ".join(gcs_endpoints), "google entries with different endpoints: mountfs has "
                           "one [gcs] endpoint", None))
    result = out.doc
    if s3_entries:
        result["s3"] = {"credentials": s3_entries}
    if gcs_entries or gcs_endpoints:
        gcs: dict[str, object] = {}
        if gcs_endpoints:
            gcs["endpoint"] = escape(next(iter(gcs_endpoints.values())))
        if gcs_entries:
            gcs["credentials"] = gcs_entries
        result["gcs"] = gcs
    if azure_entries:
        result["azure"] = {"containers": azure_entries}
    if substitutions:
        result["path_substitution"] = substitutions
    if mounts:
        result["mount"] = mounts
    return out


_S3_NAMES = {"key": "access_key", "secret": "secret_key", "endpoint": "endpoint", "secure": "endpoint",
             "region": "region", "bucket": "buckets"}
_AZURE_NAMES = {"account_name": "access_key", "account_key": "secret_key", "endpoint": "endpoint",
                "container_name": "buckets"}
"""The yml's key each entry key was made from, for messages: the user wrote those."""


def _minio(where: str, strings: dict[str, str], buckets: list[str], mounts: list[dict[str, object]],
           entries: list[dict[str, object]], out: Imported) -> None:
    endpoint = strings.get("endpoint", "s3.amazonaws.com")
    port = strings.get("port")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        out.errors.append((f"{where}.port", f'"{port}" is not a port number (1 to 65535)', None))
        return
    problem = endpoint_problem(endpoint)
    if problem is not None:
        out.errors.append((f"{where}.endpoint", *problem))
        return
    host, number, secure = split_endpoint(endpoint, port)
    host_port, https = s3_endpoint(host, number, secure)
    role = strings.get("iam_role")
    if role:
        out.notes.append(Note(f"{where}.iam_role", f"{role}: the instance's role, through boto3's credential "
                              "chain (instance metadata); no key is read", "s3"))
    for bucket in buckets:
        entry: dict[str, object] = {"bucket": escape(bucket)}
        if host_port is not None:
            entry["endpoint"] = f"{'https' if https else 'http'}://{host_port}"
            entry["secure"] = https
        if strings.get("access_key") and not role:
            entry["key"] = escape(strings["access_key"])
            entry["secret"] = escape(strings.get("secret_key", ""))
        if strings.get("region"):
            entry["region"] = escape(strings["region"])
        entries.append(entry)
        out.origins[("s3", "credentials", len(entries) - 1)] = where
        for ours, theirs in _S3_NAMES.items():
            out.origins[("s3", "credentials", len(entries) - 1, ours)] = f"{where}.{theirs}"
        url = f"s3://{host_port}/{escape(bucket)}" if host_port else f"s3://{escape(bucket)}"
        mounts.append({"path": f"s3/{escape(bucket)}", "url": url})


def _azure(where: str, strings: dict[str, str], buckets: list[str], mounts: list[dict[str, object]],
           entries: list[dict[str, object]], out: Imported) -> None:
    account = strings.get("access_key")
    endpoint = strings.get("endpoint")
    if not account and endpoint:  # https://ACCOUNT.blob.core.windows.net
        account = endpoint.partition("://")[2].split(".", 1)[0] or None
    if not account:
        out.errors.append((f"{where}.access_key", "the azure provider needs access_key: the storage "
                           "account's name", None))
        return
    for bucket in buckets:
        entry: dict[str, object] = {"account_name": escape(account), "container_name": escape(bucket)}
        if strings.get("secret_key"):
            entry["account_key"] = escape(strings["secret_key"])
        if endpoint and endpoint.rstrip("/").lower() != f"https://{account}.blob.core.windows.net".lower():
            entry["endpoint"] = escape(endpoint.rstrip("/"))
        entries.append(entry)
        out.origins[("azure", "containers", len(entries) - 1)] = where
        for ours, theirs in _AZURE_NAMES.items():
            out.origins[("azure", "containers", len(entries) - 1, ours)] = f"{where}.{theirs}"
        mounts.append({"path": f"azure/{escape(bucket)}", "url": f"az://{escape(bucket)}@{escape(account)}"})


def credentials_hint(store: str, config: Config, url: StoreUrl, entry: int | None) -> str:
    """What to set in the remote_links.yml when a bucket finds no credentials: its own keys."""
    where = f" in {config.settings_source}"
    if store == "gcs":
        return (f'set credentials_path (the key file) of the google storage that lists "{url.bucket}"'
                f"{where}, or GOOGLE_APPLICATION_CREDENTIALS in mountfs's environment")
    if entry is None:
        return (f'add a minio storage with "{url.bucket}" in its buckets, and its access_key and secret_key, '
                f"to {config.settings_source}")
    name = config.key_name("s3", "credentials", entry)
    if any(note.startswith(f"{name}.iam_role:") for note in config.notes):
        return (f"{name}.iam_role is set{where}: the instance's role, which boto3's credential chain did "
                f"not find (no instance metadata, AWS_ACCESS_KEY_ID or AWS_PROFILE); or set access_key and "
                f"secret_key of {name} instead")
    return f"set access_key and secret_key of {name}{where}, or iam_role for the instance's role"
