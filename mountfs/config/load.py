"""From a file or a URL to a Config: reading the file safely, parsing, and building every section."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tomllib
from dataclasses import dataclass

from mountfs.config import importers
from mountfs.config.azure import azure_section
from mountfs.config.gcs import gcs_section
from mountfs.config.general import cache_section, read_section, retry_section, write_section
from mountfs.config.importers import Imported
from mountfs.config.metrics import metrics_section
from mountfs.config.model import AzureConfig, Config, MiB, MountConfig
from mountfs.config.mounts import (
    direct_access_section,
    mounts_section,
    path_substitution_section,
    resolve_url,
)
from mountfs.config.reader import Reader, Table
from mountfs.config.s3 import s3_section
from mountfs.config.shared_cache import shared_cache_section
from mountfs.config.toml_text import Path, toml_error_hint
from mountfs.config.urls import parse_url, shown_url
from mountfs.config.values import InvalidValue, format_size
from mountfs.errors import ConfigError, ConfigErrors

_TOP_KEYS = (
    "cache", "read", "write", "retry", "mount", "direct_access", "path_substitution", "s3", "gcs", "azure",
    "shared_cache",
    "metrics",
)  # fmt: skip


def build(r: Reader, doc: Table, source: str, *, mounts: list[Table] | None = None, need_mounts: bool = True
          ) -> Config:
    """`mounts`: [[mount]] tables that take the place of the document's own (the URL of SOURCE when the
    settings come from `-o config=`); they are not searched for ${VAR} references, as a URL is not."""
    expanded = r.expand(doc, ())
    assert isinstance(expanded, dict)
    if mounts is not None:
        expanded["mount"] = mounts
    root = r.table(expanded, (), _TOP_KEYS, "")
    cache = cache_section(r, root)
    read = read_section(r, root, cache.block_size)
    write, retry = write_section(r, root), retry_section(r, root)
    substitutions = path_substitution_section(r, root)
    azure = azure_section(r, root)
    mount_configs = mounts_section(r, root, required=need_mounts,
                                   resolve=lambda url: resolve_url(url, azure, substitutions))
    return Config(
        source=source,
        cache=cache,
        read=read,
        write=write,
        retry=retry,
        mounts=mount_configs,
        direct_access=direct_access_section(r, root),
        path_substitution=substitutions,
        s3=s3_section(r, root),
        gcs=gcs_section(r, root),
        azure=azure,
        shared_cache=shared_cache_section(r, root, azure, mount_configs),
        metrics=metrics_section(r, root),
    )


_NESTED = "arrays or tables are nested too deeply to read"


@dataclass
class Document:
    """A config file parsed but not yet checked: TOML as written, or a foreign format imported."""

    file: str
    doc: Table
    text: str | None = None
    """The TOML text, to find the line of a key; None for an imported document."""
    imported: Imported | None = None


def parse_text(text: str, source: str) -> Document:
    """A foreign format its importer recognises, else TOML (whose syntax errors are then the message)."""
    module = importers.detect(source, text)
    if module is not None:
        imported = module.import_text(source, text)
        return Document(source, imported.doc, None, imported)
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ConfigErrors([ConfigError(_NESTED, file=source)]) from None
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
    return Document(source, doc, text)


def build_document(document: Document, source: str | None = None, *, mounts: list[Table] | None = None,
                   need_mounts: bool = True, mount_origins: dict[Path, str] | None = None) -> Config:
    """Check a document in full; every problem (the importer's and the reader's) is raised together.
    `mounts` take the place of the document's own, so the foreign keys its own came from are not
    theirs: `mount_origins` are (those of the links file they were read from)."""
    imported = document.imported
    origins = dict(imported.origins) if imported else {}
    if mounts is not None:
        origins = {path: key for path, key in origins.items() if path[:1] != ("mount",)}
        origins.update({path: key for path, key in (mount_origins or {}).items() if path[:1] == ("mount",)})
    reader = Reader(document.file, document.text or "", origins)
    if imported is not None:
        for key, message, hint in imported.errors:
            reader.errors.append(ConfigError(message, file=document.file, key=key, hint=hint))
        if need_mounts and mounts is None and not document.doc.get("mount"):
            # "add [[mount]]" is no advice for a foreign file: it can be given with one URL instead
            reader.errors.append(ConfigError(
                f"names no bucket to mount ({imported.format} settings only)", file=document.file,
                hint="mount a URL with these settings: "
                f"mountfs s3://bucket/prefix MOUNTPOINT -o config={document.file}",
            ))  # fmt: skip
            need_mounts = False
    try:
        config = build(reader, document.doc, source or document.file, mounts=mounts, need_mounts=need_mounts)
    except RecursionError:  # tomllib took it, but walking it (${VAR} expansion) did not
        raise ConfigErrors([ConfigError(_NESTED, file=document.file)]) from None
    if reader.errors:  # in file order, as an editor would show them; those without a line last
        raise ConfigErrors(sorted(reader.errors, key=lambda e: (e.line is None, e.line or 0)))
    config = dataclasses.replace(config, settings_file=document.file, key_origins=tuple(origins.items()),
                                 settings_format=imported.format if imported is not None else None)
    if imported is not None and imported.notes:
        config = dataclasses.replace(config, notes=tuple(f"{n.key}: {n.message}" for n in imported.notes))
    return config


def _load_text(text: str, source: str) -> Config:
    return build_document(parse_text(text, source))


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


def read_document(path: str) -> Document:
    """Read and parse a config file of any format mountfs reads (TOML, or one an importer knows)."""
    data = _read_config_file(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigErrors([ConfigError("not UTF-8 text", file=path, line=line)]) from None
    return parse_text(text, path)


def load_config(path: str, *, need_mounts: bool = True) -> Config:
    """Load a config file; every problem found is raised together as one ConfigErrors. `need_mounts`
    False: a file of settings only (for `-o config=`) is complete without a [[mount]]."""
    return build_document(read_document(path), need_mounts=need_mounts)


def config_from_url(url: str) -> Config:
    """`mountfs s3://bucket/prefix /mnt`: the bucket itself is the mount root, everything else default
    (`mountfs s3://host:port/ /mnt`: every bucket there, one directory each)."""
    try:
        store = resolve_url(parse_url(url, bucketless=True), AzureConfig(), ())
    except InvalidValue as exc:
        raise ConfigErrors([ConfigError(exc.message, file=shown_url(url), hint=exc.hint)]) from None
    return Config(source=url, mounts=(MountConfig("", store, False),))


SECRET_ENVIRONMENT = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET",
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
        values += [container.account_key, container.connection_string, container.sas_token,
                   container.client_secret]
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


def is_url(source: str) -> bool:
    """"s3:bucket" (a URL typo) counts as a URL unless a file of that name exists, so the user gets the
    URL's error rather than "no such file"."""
    if _URL_START.match(source):
        return True
    bare = source.strip()  # a URL pasted with the blanks around it is still that URL
    return bool((_URL_START.match(bare) or _SCHEME_START.match(bare)) and not os.path.exists(source))


def settings_document(config: str) -> Document:
    """The document `-o config=` names: a file, or "clearml" for the clearml.conf ClearML itself would
    read (CLEARML_CONFIG_FILE, then ~/clearml.conf)."""
    if config == "clearml":
        return read_document(importers.importer("clearml").default_path())
    return read_document(os.path.expanduser(config))


def source_document(source: str) -> Document:
    """SOURCE that is not one URL: "modelkit:" (modelkit's environment variables) or a config file."""
    if source == "modelkit:":
        imported = importers.importer("modelkit").import_environment(dict(os.environ))
        return Document("modelkit:", imported.doc, None, imported)
    return read_document(source)


def load_source(source: str, config: str | None = None) -> Config:
    """SOURCE on the command line is a URL or a config file. `config` (`-o config=`) names a file whose
    settings (credentials, cache, direct access, path substitution) apply to SOURCE's mounts."""
    if config is None:
        if is_url(source):
            return config_from_url(source)
        document = source_document(source)
        bind_links(document, {})
        return build_document(document)
    settings = settings_document(config)
    if is_url(source):
        try:
            return build_document(settings, source, mounts=[{"path": "", "url": source}])
        except ConfigErrors as exc:  # the URL was typed on the command line, not written in the file
            raise ConfigErrors([_from_source(e, source) for e in exc.errors]) from None
    own = source_document(source)
    if own.imported is not None and own.imported.errors:  # the combined document keeps only the settings'
        raise ConfigErrors([ConfigError(message, file=own.file, key=key, hint=hint)
                            for key, message, hint in own.imported.errors])
    bind_links(own, settings.doc)
    mounts = own.doc.get("mount")
    if isinstance(mounts, list):  # expanded as its own document: a "$${" there is a literal "${"
        reader = Reader(own.file, own.text or "", own.imported.origins if own.imported else None)
        mounts = reader.expand(mounts, ("mount",))
        if reader.errors:
            raise ConfigErrors(reader.errors)
    own_settings = {k: v for k, v in own.doc.items() if k != "mount"}
    combined = Document(settings.file, _merged(settings.doc, own_settings), settings.text, settings.imported)
    return build_document(combined, source, mounts=mounts if isinstance(mounts, list) else [],
                          mount_origins={path: f"{key} of {own.file}" for path, key in
                                         (own.imported.origins if own.imported else {}).items()})


def import_with_settings(source: str, config: str) -> Imported:
    """What `mountfs config import SOURCE -o config=FILE` prints: the settings of FILE with the mounts
    of SOURCE (a links file above all), checked first exactly as `mountfs SOURCE MNT -o config=FILE`
    would load them. The mounts are taken as written, so their $${ stay escaped."""
    load_source(source, config)
    settings = settings_document(config)
    own = source_document(source)
    bind_links(own, settings.doc)
    doc = _merged(settings.doc, {k: v for k, v in own.doc.items() if k != "mount"})
    doc.pop("mount", None)  # the settings' own mounts are not mounted with SOURCE
    if own.doc.get("mount"):
        doc["mount"] = own.doc["mount"]
    notes = [*(settings.imported.notes if settings.imported else []),
             *(own.imported.notes if own.imported else [])]
    formats = [d.imported.format if d.imported else "mountfs TOML" for d in (own, settings)]
    return Imported(f"{formats[0]} with the settings of {settings.file}, a {formats[1]}", doc, notes)


def _from_source(error: ConfigError, source: str) -> ConfigError:
    """An error about the mount made of SOURCE names SOURCE (as shown), not a [[mount]] of the file."""
    if error.key is None or not (error.key == "mount[0]" or error.key.startswith(("mount[0].", "mount[0]["))):
        return error
    return ConfigError(error.message, file=shown_url(source), hint=error.hint)


def _merged(base: Table, over: Table) -> Table:
    """`base` with the keys of `over` set in it, tables merged key by key: SOURCE's `[s3] endpoint`
    keeps the settings file's `[[s3.credentials]]`."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def bind_links(document: Document, settings: Table) -> None:
    """A Supervisely links file names an Azure container without its account: the settings have it."""
    imported = document.imported
    mounts = document.doc.get("mount")
    if imported is None or imported.format != "Supervisely links file" or not isinstance(mounts, list):
        return
    problems = importers.importer("supervisely_links").bind(mounts, settings)
    if problems:
        raise ConfigErrors([ConfigError(problem, file=document.file) for problem in problems])
