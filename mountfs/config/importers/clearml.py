"""ClearML's clearml.conf, read with pyhocon (the HOCON parser ClearML itself uses): includes,
substitutions (`${VAR}`, `${?VAR}`), `=` or `:`, dotted keys. Its storage sections become mountfs's:

- `sdk.aws.s3` -> [s3] and [[s3.credentials]], `sdk.aws.boto3` -> [s3.boto3] (its chunk size is the
  upload part size, [write] part_size);
- `sdk.google.storage` -> [gcs] and [[gcs.credentials]];
- `sdk.azure.storage.containers` -> [[azure.containers]];
- `sdk.storage.cache.default_base_dir` -> [cache] dir, `sdk.storage.direct_access` ->
  [[direct_access]], `sdk.storage.path_substitution` -> [[path_substitution]];
- every bucket the file names (an S3 or GCS credentials entry's bucket, an Azure entry's container)
  becomes a [[mount]] at the directory named as ClearML writes its URL without "://":
  `s3/bucket`, `s3/host:port/bucket`, `gs/bucket/subdir`, `azure/account/container`. An S3 entry for
  a host alone mounts every bucket of that host (`s3://host:port/`) at `s3/host:port`.

Blank strings are ClearML's "not set" and are left out. A storage key with no equivalent is a note
(`config import` prints it as a comment); a key ClearML does not know either is an error naming it.
The older layout without the `sdk { }` wrapper (`aws { s3 {...} }`, `storage { cache {...} }` at
the top) is read the same way. Sections that are not about storage (api, agent, sdk.development...)
are left out with one note.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import re
import stat
import threading
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mountfs.config.importers import Imported, Note
from mountfs.config.toml_text import Path
from mountfs.config.values import closest
from mountfs.errors import ConfigError, ConfigErrors, without_credentials

if TYPE_CHECKING:
    from mountfs.config.model import Config, StoreUrl

NAME = "clearml"

log = logging.getLogger(__name__)

_STORAGE_ROOTS = ("aws", "google", "azure", "storage")
"""The sections of ClearML's sdk that configure storage (and the top keys of its older fragments)."""
_CLEARML_ROOTS = ("sdk", "api", "agent", *_STORAGE_ROOTS)
_MOUNTFS_TOP = (
    "cache", "read", "write", "retry", "mount", "direct_access", "path_substitution", "s3", "gcs", "azure",
)  # fmt: skip
_HOCON_ROOT = re.compile(  # `sdk {`, `azure.storage {`, `aws: {`, or `sdk.aws.s3.key: ...`
    r"^[ \t]*(?:(?:sdk|api|agent|aws|google|azure|storage)(?:\.[A-Za-z_]\w*)*[ \t]*(?:[:=][ \t]*)?\{"
    r"|sdk(?:\.[A-Za-z_]\w*)+[ \t]*[:=]"
    r"|include[ \t]+(?:\"|(?:required|file|url|classpath|package)[ \t]*\())",  # `include "common.conf"`
    re.MULTILINE,
)
_OTHER_FORMATS = (".yml", ".yaml", ".env", ".txt", ".toml")
_TOML_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*(?:" + "|".join(_MOUNTFS_TOP) + r")\b", re.MULTILINE)


def looks_like(path: str, text: str) -> bool:
    """A clearml.conf, never a mountfs TOML file: text that TOML reads is ClearML's only when its top
    names ClearML's sections and none of mountfs's; other text only when a line opens one of
    ClearML's sections and no line is a mountfs [section] header."""
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        if path.lower().endswith(_OTHER_FORMATS):
            return False
        return bool(_HOCON_ROOT.search(text)) and not _TOML_HEADER.search(text)
    return any(k in doc for k in _CLEARML_ROOTS) and not any(k in doc for k in _MOUNTFS_TOP)


def default_path() -> str:
    """The clearml.conf ClearML itself would read: CLEARML_CONFIG_FILE (or the older
    TRAINS_CONFIG_FILE) when set, else ~/clearml.conf, else the legacy ~/trains.conf."""
    for name in ("CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE"):
        value = os.environ.get(name, "").strip()
        if value:
            path = os.path.expanduser(os.path.expandvars(value))
            if not os.path.isfile(path):
                raise ConfigErrors([ConfigError(
                    f"{name} names {path}, which is not a file", file="-o config=clearml",
                    hint="ClearML reads no other file when it is set: fix it or unset it",
                )])  # fmt: skip
            return path
    looked = [os.path.expanduser("~/clearml.conf"), os.path.expanduser("~/trains.conf")]
    for path in looked:
        if os.path.isfile(path):
            return path
    raise ConfigErrors([ConfigError(
        f"no clearml.conf found (looked at CLEARML_CONFIG_FILE, TRAINS_CONFIG_FILE, {', '.join(looked)})",
        file="-o config=clearml", hint="run clearml-init, or give its path: -o config=/path/to/clearml.conf",
    )])  # fmt: skip


_MAX_GRAMMAR_SHOWN = 200


def _parse(path: str, text: str) -> dict[str, Any]:
    """The HOCON document as plain dicts and lists; a syntax error or an unresolved substitution is one
    line with the file and the line, as ClearML's parser finds them."""
    from pyhocon import ConfigFactory  # type: ignore[import-untyped]
    from pyhocon.exceptions import ConfigException  # type: ignore[import-untyped]
    from pyparsing import ParseBaseException

    basedir = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.getcwd()
    try:
        with _guarded_includes(path):
            tree = ConfigFactory.parse_string(text, basedir=basedir)
    except ParseBaseException as exc:
        what = re.sub(r"\s*\(at char \d+\).*$", "", str(exc), flags=re.DOTALL) or exc.msg
        if len(exc.msg) > _MAX_GRAMMAR_SHOWN:  # pyparsing lists its whole grammar: say what it means
            expected = "':', '=' or '{' after a key" if exc.msg.startswith("Expected {: ...") else "a key"
            what = f"expected {expected}, found {exc.found}"
        raise ConfigErrors([ConfigError(
            f"HOCON syntax error at column {exc.column}: {what}", file=path, line=exc.lineno,
            hint=_toml_hint(text),
        )]) from None  # fmt: skip
    except ConfigException as exc:
        message = str(exc)
        line: int | None = None
        where = re.search(r"\s*\(line: (\d+), col: \d+\)", message)
        if where:
            line = int(where.group(1))
            message = message[: where.start()] + message[where.end() :]
        hint = None
        if re.match(r"Token .* must be of type", message, flags=re.DOTALL):  # pyhocon's own words quote
            # the values, a secret among them
            message = "a value runs into the next one (a string and a table or list joined)"
            hint = "put a comma or a new line between two keys"
        missing = re.match(r"Cannot resolve variable \$\{(\??)([^}]*)\}", message)
        if missing:
            message = f"${{{missing.group(2)}}}: no such key in the file and no such environment variable"
            name = missing.group(2)
            hint = f"set {name}, or write ${{?{name}}} to leave the key out when it is not"
        raise ConfigErrors([ConfigError(message, file=path, line=line, hint=hint)]) from None
    except _IncludeError as exc:
        raise ConfigErrors([ConfigError(str(exc), file=path, hint=exc.hint)]) from None
    except RecursionError:
        raise ConfigErrors([ConfigError("nested too deeply to read", file=path)]) from None
    except (OSError, ValueError) as exc:  # an include that cannot be read
        raise ConfigErrors([ConfigError(f"cannot read: {exc}", file=path)]) from None
    plain = _plain(tree)
    assert isinstance(plain, dict)
    return plain


MAX_INCLUDE_SIZE = 1 << 20
"""As for the file itself: an included clearml.conf is a few KiB."""
INCLUDE_URL_TIMEOUT = 30.0
"""`include url(...)` is fetched as ClearML fetches it, but never waited for without end, nor read
without a limit."""
_include_lock = threading.Lock()


class _IncludeError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _read_include(filename: str) -> str:
    """An included file, read as the top file is: opened without blocking, so a FIFO or a device is
    refused at once instead of waiting for a writer or reading /dev/zero forever."""
    fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # OSError: pyhocon's "required"
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as pyhocon has it: skipped unless required
            raise IsADirectoryError(errno.EISDIR, "is a directory", filename)
        if not stat.S_ISREG(mode):
            raise _IncludeError(f"include {filename}: not a regular file (a pipe or a device?)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_INCLUDE_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_INCLUDE_SIZE:
        raise _IncludeError(f"include {filename}: larger than 1MiB, too large for a config file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _IncludeError(f"include {filename}: not UTF-8 text") from None


@contextlib.contextmanager
def _guarded_includes(path: str) -> Iterator[None]:
    """pyhocon reads an include with ConfigFactory.parse_file (or parse_URL), with no limit and no
    check of what the file is, and follows an include loop until Python's recursion limit: while this
    file is parsed, both go through the same checks as the file itself, and a loop is named."""
    from pyhocon import ConfigFactory
    from pyhocon.config_parser import DEFAULT_SUBSTITUTION  # type: ignore[import-untyped]

    saved = {name: ConfigFactory.__dict__[name] for name in ("parse_file", "parse_URL")}
    parse_string = ConfigFactory.parse_string
    chain = [os.path.realpath(path)]

    def parse_file(filename: str, encoding: str = "utf-8", required: bool = True, resolve: bool = True,
                   unresolved_value: Any = DEFAULT_SUBSTITUTION) -> Any:  # fmt: skip
        real = os.path.realpath(filename)
        if real in chain:
            loop = " -> ".join(os.path.basename(p) for p in [*chain[chain.index(real):], real])
            raise _IncludeError(f"include loop: {loop}", "an included file must not include itself again")
        try:
            text = _read_include(filename)
        except OSError as exc:
            if required:
                raise _IncludeError(f"include {filename}: {exc.strerror}",
                                    "without required( ), an include that is missing is skipped") from None
            log.warning("%s: include %s skipped: %s", path, filename, exc.strerror)
            return []
        chain.append(real)
        try:
            return parse_string(text, os.path.dirname(filename), resolve, unresolved_value)
        finally:
            chain.pop()

    def parse_url_guarded(url: str, timeout: float | None = None, resolve: bool = True,
                          required: bool = False,
                          unresolved_value: Any = DEFAULT_SUBSTITUTION) -> Any:  # fmt: skip
        """A file:// URL is that file, read as above; another is fetched with a timeout and a size limit."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() == "file":
            return parse_file(urllib.request.url2pathname(parts.path), required=required, resolve=resolve,
                              unresolved_value=unresolved_value)  # fmt: skip
        try:
            with urllib.request.urlopen(url, timeout=timeout or INCLUDE_URL_TIMEOUT) as reply:
                data = reply.read(MAX_INCLUDE_SIZE + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            if required:
                raise _IncludeError(f"include {url}: {reason}") from None
            log.warning("%s: include %s skipped: %s", path, without_credentials(url), reason)
            return []
        if len(data) > MAX_INCLUDE_SIZE:
            raise _IncludeError(f"include {url}: larger than 1MiB, too large for a config file")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _IncludeError(f"include {url}: not UTF-8 text") from None
        return parse_string(text, os.path.dirname(url), resolve, unresolved_value)

    with _include_lock:
        ConfigFactory.parse_file = parse_file
        ConfigFactory.parse_URL = parse_url_guarded
        try:
            yield
        finally:
            for name, method in saved.items():
                setattr(ConfigFactory, name, method)


_TOML_TABLE = re.compile(r"^[ \t]*\[\[?[ \t]*[\w\"]", re.MULTILINE)


def _toml_hint(text: str) -> str | None:
    """A clearml.conf written in TOML ([sdk.aws.s3] headers) is no HOCON: ClearML cannot read it either."""
    if not _TOML_TABLE.search(text):
        return None
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    return ("this is TOML, which ClearML does not read: write sdk.aws.s3 { key: ... } as clearml.conf does, "
            "or write it as a mountfs config ([s3], [[s3.credentials]], [[mount]]) in a .toml file")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _escape(value: Any) -> Any:
    """The reader expands ${VAR} in what it is given: HOCON has already done so, so a "${" left in a
    value is literal."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _blank(value: Any) -> bool:
    """ClearML's way of writing "not set": "" (or only spaces), null, an empty table."""
    return value is None or (isinstance(value, str) and not value.strip()) or value == {}


class _Importer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.doc: dict[str, Any] = {}
        self.notes: list[Note] = []
        self.origins: dict[Path, str] = {}
        self.errors: list[tuple[str, str, str | None]] = []
        self.mounts: list[tuple[str, str, str]] = []  # (path, url, foreign key)

    # -- what is emitted

    def put(self, where: Path, value: Any, origin: str) -> None:
        table = self.doc
        for key in where[:-1]:
            assert isinstance(key, str)
            table = table.setdefault(key, {})
        assert isinstance(where[-1], str)
        table[where[-1]] = _escape(value)
        self.origins[where] = origin

    def append(self, where: str, entry: dict[str, Any], origin: str, key_origins: dict[str, str]) -> None:
        """One [[where]] table (where is "s3.credentials", "direct_access", ...)."""
        parts = where.split(".")
        table = self.doc
        for key in parts[:-1]:
            table = table.setdefault(key, {})
        items = table.setdefault(parts[-1], [])
        index = len(items)
        items.append(_escape(entry))
        base: Path = (*parts, index)
        self.origins[base] = origin
        for key, foreign in key_origins.items():
            self.origins[(*base, key)] = foreign

    def note(self, key: str, message: str, near: str = "") -> None:
        self.notes.append(Note(key, message, near))

    def error(self, key: str, message: str, hint: str | None = None) -> None:
        self.errors.append((key, message, hint))

    # -- walking the foreign document

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if _blank(value):
            return {}
        if not isinstance(value, dict):
            self.error(key, f"expected a table {{ ... }}, got {type(value).__name__}")
            return {}
        return value

    def entries(self, value: Any, key: str) -> list[tuple[str, dict[str, Any]]]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f"expected a list [ {{ ... }}, ... ], got {type(value).__name__}")
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.error(f"{key}[{i}]", f"expected a table {{ ... }}, got {type(item).__name__}")
            else:
                out.append((f"{key}[{i}]", item))
        return out

    def unknown(self, table: dict[str, Any], key: str, known: tuple[str, ...]) -> None:
        for name in table:
            if name not in known:
                near = closest(name, known)
                self.error(f"{key}.{name}", "unknown key (ClearML does not read it either)",
                           f'did you mean "{near}"?' if near else None)  # fmt: skip

    def mount(self, path: str, url: str, origin: str) -> None:
        self.mounts.append((path, url, origin))


def _mountable(name: str | None, forbidden: str) -> bool:
    """A bucket or host a mount can be made of: "s3://b" as a bucket is the entry's error alone."""
    return name is None or not any(c in name for c in forbidden)


def _string(value: Any) -> Any:
    """A set string as written, else None (blank); other types go through for the reader to judge."""
    return None if _blank(value) else value


# ---------------------------------------------------------------------------------------------------------
# sdk.aws

_S3_KEYS = ("key", "secret", "token", "region", "use_credentials_chain", "extra_args", "credentials",
            "verify", "secure", "profile")  # fmt: skip
_S3_ENTRY_KEYS = ("bucket", "host", "subdir", "key", "secret", "token", "region", "multipart", "secure",
                  "verify", "use_credentials_chain", "extra_args", "acl", "profile")  # fmt: skip
_BOTO3_KEYS = ("pool_connections", "max_multipart_concurrency", "multipart_threshold", "multipart_chunksize",
               "connect_timeout", "read_timeout", "signature_version", "stream_connections",
               "addressing_style")  # fmt: skip


def _profile(imp: _Importer, value: Any, key: str) -> None:
    if _string(value) is not None:
        imp.error(key, "an AWS profile of its own is not supported",
                  f"run mountfs with AWS_PROFILE={value} in its environment and leave key and secret blank "
                  "(then boto3's chain reads that profile)")  # fmt: skip


def _aws(imp: _Importer, aws: dict[str, Any], base: str) -> None:
    imp.unknown(aws, base, ("s3", "boto3"))
    s3_key = f"{base}.s3"
    s3 = imp.table(aws.get("s3"), s3_key)
    imp.unknown(s3, s3_key, _S3_KEYS)
    imp.origins[("s3",)] = s3_key  # so a key [s3] misses is named as clearml.conf names it
    for name in ("key", "secret", "token", "region"):
        value = s3.get(name)
        if isinstance(value, str):
            value = value.strip()  # as ClearML reads the defaults
        if _string(value) is not None:
            imp.put(("s3", name), value, f"{s3_key}.{name}")
    chain = s3.get("use_credentials_chain")
    if chain is not None and chain is not False:
        imp.put(("s3", "use_credentials_chain"), chain, f"{s3_key}.use_credentials_chain")
    if not _blank(s3.get("extra_args")):
        imp.put(("s3", "extra_args"), s3["extra_args"], f"{s3_key}.extra_args")
    for name, default in (("verify", True), ("secure", True)):
        value = s3.get(name)
        if value is not None and value != default:
            imp.error(f"{s3_key}.{name}", f"mountfs has no {name} for every S3 endpoint",
                      f"put {name}: {_hocon(value)} in the credentials entry of each host "
                      "it is for")  # fmt: skip
    _profile(imp, s3.get("profile"), f"{s3_key}.profile")
    for entry_key, entry in imp.entries(s3.get("credentials"), f"{s3_key}.credentials"):
        _s3_entry(imp, entry, entry_key, chain is True)
    _boto3(imp, imp.table(aws.get("boto3"), f"{base}.boto3"), f"{base}.boto3")


def _hocon(value: Any) -> str:
    return "true" if value is True else "false" if value is False else f'"{value}"'


def _s3_entry(imp: _Importer, entry: dict[str, Any], key: str, default_chain: bool) -> None:
    imp.unknown(entry, key, _S3_ENTRY_KEYS)
    out: dict[str, Any] = {}
    origins: dict[str, str] = {}
    bucket = _string(entry.get("bucket"))
    if isinstance(bucket, str):
        bucket = bucket.strip("\"'").rstrip("/")  # as ClearML reads it
    host = _string(entry.get("host"))
    subdir = _string(entry.get("subdir"))
    if isinstance(subdir, str):
        subdir = subdir.strip("\"'").strip("/")
    if bucket is None and host is None:
        imp.note(key, "names neither a bucket nor a host, so it applies to nothing: left out", "s3")
        return
    if isinstance(host, str) and "://" in host:
        scheme, _, bare = host.partition("://")
        secure = ", secure: false" if scheme.lower() == "http" else ""
        imp.error(f"{key}.host", f'"{host}" is a URL: ClearML matches the host as "host:port" only',
                  f'write host: "{bare.rstrip("/")}"{secure}')  # fmt: skip
        return
    for name in ("host", "bucket", "key", "secret", "token", "region", "verify"):
        value = bucket if name == "bucket" else host if name == "host" else _string(entry.get(name))
        if value is not None:
            out[name], origins[name] = value, f"{key}.{name}"
    for name in ("multipart", "secure"):
        if entry.get(name) is not None:
            out[name], origins[name] = entry[name], f"{key}.{name}"
    chain = entry.get("use_credentials_chain")
    if chain is not None and chain != default_chain:  # the same as [s3]'s: nothing to say
        out["use_credentials_chain"], origins["use_credentials_chain"] = chain, f"{key}.use_credentials_chain"
    if not _blank(entry.get("extra_args")):
        out["extra_args"], origins["extra_args"] = entry["extra_args"], f"{key}.extra_args"
    if _string(entry.get("acl")) is not None:
        imp.note(f"{key}.acl", "ClearML does not use it; mountfs neither (an ACL for uploads is "
                 "extra_args: { ACL: ... })", "s3")  # fmt: skip
    _profile(imp, entry.get("profile"), f"{key}.profile")
    imp.append("s3.credentials", out, key, origins)
    if not all(isinstance(v, str | None) for v in (bucket, host, subdir)):
        return  # the reader reports the type
    if not _mountable(bucket, "/:") or not _mountable(host, "/@"):
        return  # the reader reports it on the entry: a mount of it would only say it again, less clearly
    if bucket is None:
        assert host is not None
        imp.mount(f"s3/{host}", f"s3://{host}/", f"{key}.host")
        return
    where = f"{host}/{bucket}" if host else bucket
    prefix = f"/{subdir}" if subdir else ""
    imp.mount(f"s3/{where}{prefix}", f"s3://{where}{prefix}", f"{key}.bucket")


def _boto3(imp: _Importer, boto3: dict[str, Any], key: str) -> None:
    imp.unknown(boto3, key, _BOTO3_KEYS)
    for name in ("pool_connections", "max_multipart_concurrency"):
        if boto3.get(name) is not None:
            imp.put(("s3", "boto3", name), boto3[name], f"{key}.{name}")
    if _string(boto3.get("addressing_style")) is not None:
        imp.put(("s3", "addressing_style"), boto3["addressing_style"], f"{key}.addressing_style")
    if boto3.get("multipart_chunksize") is not None:
        imp.put(("write", "part_size"), boto3["multipart_chunksize"], f"{key}.multipart_chunksize")
    notes = {
        "multipart_threshold": "mountfs uploads a file in one request when it fits in one part "
                               "([write] part_size), in parts otherwise",
        "connect_timeout": "mountfs gives each request [retry] request_timeout (30s), then retries",
        "read_timeout": "mountfs gives each request [retry] request_timeout (30s), then retries",
        "stream_connections": "mountfs reads with [read] max_concurrency requests in flight",
    }  # fmt: skip
    for name, message in notes.items():
        if boto3.get(name) is not None:
            imp.note(f"{key}.{name}", f"no equivalent: {message}", "s3")
    version = _string(boto3.get("signature_version"))
    if version is not None and version != "s3v4":
        imp.error(f"{key}.signature_version", f'"{version}" is not supported: mountfs signs with SigV4 only',
                  'leave it out, or write "s3v4"')  # fmt: skip
    elif version is not None:
        imp.note(f"{key}.signature_version", "mountfs always signs with SigV4", "s3")


# ---------------------------------------------------------------------------------------------------------
# sdk.google.storage, sdk.azure.storage

_GCS_KEYS = ("project", "credentials_json", "credentials", "pool_connections", "pool_maxsize",
             "stream_connections")  # fmt: skip
_GCS_ENTRY_KEYS = ("bucket", "subdir", "project", "credentials_json", "pool_connections", "pool_maxsize")
_POOL_NOTE = "no equivalent: mountfs sizes its connection pools from [read] and [write] max_concurrency"


def _google(imp: _Importer, google: dict[str, Any], base: str) -> None:
    imp.unknown(google, base, ("storage",))
    key = f"{base}.storage"
    gs = imp.table(google.get("storage"), key)
    imp.unknown(gs, key, _GCS_KEYS)
    imp.origins[("gcs",)] = key
    for name in ("project", "credentials_json"):
        if _string(gs.get(name)) is not None:
            imp.put(("gcs", name), gs[name], f"{key}.{name}")
    for name in ("pool_connections", "pool_maxsize", "stream_connections"):
        if gs.get(name) is not None:
            imp.note(f"{key}.{name}", _POOL_NOTE, "gcs")
    for entry_key, entry in imp.entries(gs.get("credentials"), f"{key}.credentials"):
        imp.unknown(entry, entry_key, _GCS_ENTRY_KEYS)
        bucket = _string(entry.get("bucket"))
        if bucket is None:
            imp.note(entry_key, "names no bucket, so it applies to nothing: left out", "gcs")
            continue
        out: dict[str, Any] = {}
        origins: dict[str, str] = {}
        subdir = _string(entry.get("subdir"))
        if isinstance(subdir, str):
            subdir = subdir.strip("\"'").strip("/") or None
        if isinstance(bucket, str):
            bucket = bucket.strip("\"'").rstrip("/")
        named = (("bucket", bucket), ("subdir", subdir), ("project", _string(entry.get("project"))),
                 ("credentials_json", _string(entry.get("credentials_json"))))  # fmt: skip
        for name, value in named:
            if value is not None:
                out[name], origins[name] = value, f"{entry_key}.{name}"
        for name in ("pool_connections", "pool_maxsize"):
            if entry.get(name) is not None:
                imp.note(f"{entry_key}.{name}", _POOL_NOTE, "gcs")
        imp.append("gcs.credentials", out, entry_key, origins)
        if isinstance(bucket, str) and isinstance(subdir, str | None) and _mountable(bucket, "/:"):
            where = f"{bucket}/{subdir}" if subdir else bucket
            imp.mount(f"gs/{where}", f"gs://{where}", f"{entry_key}.bucket")


def _azure(imp: _Importer, azure: dict[str, Any], base: str) -> None:
    imp.unknown(azure, base, ("storage",))
    key = f"{base}.storage"
    storage = imp.table(azure.get("storage"), key)
    imp.unknown(storage, key, ("containers", "max_connections"))
    if storage.get("max_connections") is not None:
        imp.note(f"{key}.max_connections", _POOL_NOTE, "azure")
    for entry_key, entry in imp.entries(storage.get("containers"), f"{key}.containers"):
        imp.unknown(entry, entry_key, ("account_name", "account_key", "container_name"))
        account = _string(entry.get("account_name"))
        if account is None:
            imp.note(entry_key, "names no account, so it applies to nothing: left out", "azure")
            continue
        out: dict[str, Any] = {}
        origins: dict[str, str] = {}
        container = _string(entry.get("container_name"))
        for name, value in (("account_name", account), ("account_key", _string(entry.get("account_key"))),
                            ("container_name", container)):  # fmt: skip
            if value is not None:
                out[name], origins[name] = value, f"{entry_key}.{name}"
        imp.append("azure.containers", out, entry_key, origins)
        if container is None:
            imp.note(entry_key, f"names no container_name: its key serves every container of account "
                     f"{account} (az://CONTAINER@{account}/... URLs), but nothing is mounted for it", "azure")
        elif isinstance(account, str) and isinstance(container, str):
            url = f"az://{container}@{account}"
            imp.mount(f"azure/{account}/{container}", url, entry_key)  # a bad name is either key's


# ---------------------------------------------------------------------------------------------------------
# sdk.storage

_STORAGE_KEYS = ("cache", "direct_access", "path_substitution", "dataset_chunk_size_mb", "log", "http")
_STRATEGY_KEYS = ("enabled", "size", "zero_file_size_check", "file_entry_lookup_size", "secondary")


def _disk_space_strategy(imp: _Importer, value: Any, key: str) -> None:
    """ClearML's size-aware cache (in the default sdk.conf of recent versions, disabled): when it is
    enabled, its limits are mountfs's [cache] max_size and min_free."""
    strategy = imp.table(value, key)
    imp.unknown(strategy, key, _STRATEGY_KEYS)
    if strategy.get("enabled") is not True:
        return  # ClearML ignores the block then, and so does mountfs
    size = imp.table(strategy.get("size"), f"{key}.size")
    imp.unknown(size, f"{key}.size", ("max_used_bytes", "min_free_bytes", "cleanup_margin_percent"))
    max_used = size.get("max_used_bytes")
    if max_used is not None and not (isinstance(max_used, int) and max_used < 0):  # -1: no limit
        imp.put(("cache", "max_size"), max_used, f"{key}.size.max_used_bytes")
    if _string(size.get("min_free_bytes")) is not None:
        imp.put(("cache", "min_free"), size["min_free_bytes"], f"{key}.size.min_free_bytes")
    for name in ("zero_file_size_check", "file_entry_lookup_size", "secondary"):
        if strategy.get(name):
            imp.note(f"{key}.{name}", "no equivalent: mountfs caches blocks, checked against the store's "
                     "ETag", "cache")  # fmt: skip
    if size.get("cleanup_margin_percent") is not None:
        imp.note(f"{key}.size.cleanup_margin_percent", "no equivalent: mountfs evicts as it goes", "cache")


def _storage(imp: _Importer, storage: dict[str, Any], base: str) -> None:
    imp.unknown(storage, base, _STORAGE_KEYS)
    cache_key = f"{base}.cache"
    cache = imp.table(storage.get("cache"), cache_key)
    imp.unknown(cache, cache_key, ("default_base_dir", "default_cache_manager_size", "direct_access",
                                   "disk_space_file_size_strategy"))  # fmt: skip
    if cache.get("disk_space_file_size_strategy") is not None:
        strategy_key = f"{cache_key}.disk_space_file_size_strategy"
        _disk_space_strategy(imp, cache["disk_space_file_size_strategy"], strategy_key)
    base_dir = _string(cache.get("default_base_dir"))
    if isinstance(base_dir, str):
        base_dir = os.path.expandvars(base_dir)  # as ClearML does; the reader expands "~" itself
    if base_dir is not None:
        imp.put(("cache", "dir"), base_dir, f"{cache_key}.default_base_dir")
    if cache.get("default_cache_manager_size") is not None:
        imp.note(f"{cache_key}.default_cache_manager_size",
                 "ClearML's limit counts whole downloaded files; mountfs caches blocks, limited by [cache] "
                 "max_size (200GiB) and max_files (1,000,000 blocks), least recently used evicted first",
                 "cache")  # fmt: skip
    if cache.get("direct_access") is not None:
        imp.note(f"{cache_key}.direct_access", "ClearML reads direct_access beside cache { }, not in it: "
                 "ignored here as there (file://* is direct by default)", "direct_access")  # fmt: skip
    for entry_key, entry in imp.entries(storage.get("direct_access"), f"{base}.direct_access"):
        imp.unknown(entry, entry_key, ("url", "content_type"))
        out = {k: entry[k] for k in ("url", "content_type") if _string(entry.get(k)) is not None}
        if not out:
            imp.note(entry_key, "names neither url nor content_type, so it matches nothing: left out",
                     "direct_access")  # fmt: skip
            continue
        imp.append("direct_access", out, entry_key, {k: f"{entry_key}.{k}" for k in out})
    if isinstance(storage.get("direct_access"), list) and not storage["direct_access"]:
        imp.put(("direct_access",), [], f"{base}.direct_access")  # nothing is direct, as written
    for entry_key, entry in imp.entries(storage.get("path_substitution"), f"{base}.path_substitution"):
        keys = ("registered_prefix", "local_prefix", "replace_windows_sep", "replace_linux_sep")
        imp.unknown(entry, entry_key, keys)
        out = {k: entry[k] for k in keys[:2] if _string(entry.get(k)) is not None}
        for name, value in out.items():
            if isinstance(value, str) and value.startswith("/"):
                out[name] = "file://" + value  # ClearML takes a URL without a scheme for a local path
        origins = {k: f"{entry_key}.{k}" for k in out}
        if not out:
            imp.note(entry_key, "names no prefix: left out", "path_substitution")
            continue
        for name in keys[2:]:
            if entry.get(name):
                imp.note(f"{entry_key}.{name}", "no equivalent: mountfs substitutes URL prefixes, whose "
                         "separator is always /", "path_substitution")  # fmt: skip
        imp.append("path_substitution", out, entry_key, origins)
    if storage.get("dataset_chunk_size_mb") is not None:
        imp.note(f"{base}.dataset_chunk_size_mb", "clearml-data's chunking of new datasets: not about "
                 "mounting, ignored")  # fmt: skip
    http = storage.get("http")
    if isinstance(http, dict) and not _blank(http.get("legacy_fileservers")):
        imp.note(f"{base}.http.legacy_fileservers",
                 "ClearML's own file server: not an object store, not mounted")
    if storage.get("log") is not None:
        imp.note(f"{base}.log", "ClearML's upload and download progress log: ignored (mountfs status shows "
                 "bytes fetched and pending uploads)")  # fmt: skip


_SECTIONS: dict[str, Callable[[_Importer, dict[str, Any], str], None]] = {
    "aws": _aws, "google": _google, "azure": _azure, "storage": _storage,
}  # fmt: skip


def _mounts(imp: _Importer) -> None:
    """One [[mount]] per bucket, in the file's order; a mount inside another (a subdir of a bucket
    mounted whole, a bucket of a host mounted whole) or a second one of the same URL is left out."""
    paths = {path for path, _, _ in imp.mounts}
    keep = {path for path in paths  # one look-up per "/" of each path, not one per other mount
            if not any(path[:i] in paths for i, c in enumerate(path) if c == "/")}  # fmt: skip
    for path, url, origin in imp.mounts:
        if path in keep:
            keep.discard(path)
            imp.append("mount", {"path": path, "url": url}, origin, {"path": origin, "url": origin})


def import_text(path: str, text: str) -> Imported:
    root = _parse(path, text)
    imp = _Importer(path)
    if "sdk" in root:
        sdk = imp.table(root["sdk"], "sdk")
        base = "sdk."
        for name in _STORAGE_ROOTS:
            if name in root:
                imp.error(name, "outside sdk { }: ClearML does not read it there", "move it into sdk { }")
        others = [k for k in root if k not in ("sdk", *_STORAGE_ROOTS)]
    else:
        sdk, base = {k: root[k] for k in _STORAGE_ROOTS if k in root}, ""
        others = [k for k in root if k not in _STORAGE_ROOTS]
    others += [f"{base}{k}" for k in sdk if k not in _STORAGE_ROOTS]
    if others:
        imp.note(", ".join(others), "not about storage: ignored")
    for name, walk in _SECTIONS.items():
        if name in sdk:
            walk(imp, imp.table(sdk[name], base + name), base + name)
    _mounts(imp)
    return Imported(NAME, imp.doc, imp.notes, imp.origins, imp.errors)


def credentials_hint(store: str, config: Config, url: StoreUrl, entry: int | None) -> str:
    """What to write in the clearml.conf when a bucket finds no credentials: its own keys."""
    where = f" in {config.settings_source}"
    if store == "gcs":
        gs = _section(config, "gcs", "sdk.google.storage")
        if entry is not None:
            first = f"set credentials_json in {config.key_name('gcs', 'credentials', entry)}{where}"
        else:
            first = (f'set {gs}.credentials_json{where}, or add {{ bucket: "{url.bucket}", credentials_json: '
                     f'"/path/key.json" }} to {gs}.credentials')
        return f"{first}; or GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`"
    s3 = _section(config, "s3", "sdk.aws.s3")
    chain = config.s3.use_credentials_chain or (
        entry is not None and config.s3.credentials[entry].use_credentials_chain)
    if chain:
        key = config.key_name(*(("s3", "credentials", entry) if entry is not None else ("s3",)))
        return (f"{key}.use_credentials_chain is true{where}, and boto3's credential chain found none: set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in mountfs's environment, "
                "or give key and secret instead")
    if entry is not None:
        first = f"set key and secret in {config.key_name('s3', 'credentials', entry)}{where}"
    elif url.host or url.bucket:
        named = f'host: "{url.host}"' if url.host else f'bucket: "{url.bucket}"'
        first = (f"set {s3}.key and {s3}.secret{where}, or add {{ {named}, key: ..., secret: ... }} to "
                 f"{s3}.credentials")
    else:
        first = f"set {s3}.key and {s3}.secret{where}"
    return (f"{first}; or use_credentials_chain: true, with AWS_ACCESS_KEY_ID / AWS_PROFILE in mountfs's "
            "environment")


def _section(config: Config, ours: str, theirs: str) -> str:
    """The clearml.conf section that is mountfs's `ours` (as the file spells it: with or without sdk.)."""
    name = config.key_name(ours)
    return theirs if name == ours else name
