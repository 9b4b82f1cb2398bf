"""The URL grammar: one table of schemes and their aliases, and the rules for bucket, host and prefix."""

from __future__ import annotations

import re
import unicodedata

from mountfs.config.model import StoreUrl
from mountfs.config.values import InvalidValue, closest
from mountfs.errors import printable

SCHEMES = ("s3", "gs", "az", "file")
"""The stores: every URL that mounts is, once resolved, one of these."""
SCHEME_ALIASES = {
    "s3a": "s3", "s3n": "s3", "aws": "s3", "minio": "s3",
    "gcs": "gs", "gcp": "gs", "google": "gs",
    "azure": "az", "abfs": "az", "abfss": "az", "wasb": "az", "wasbs": "az",
    "local": "file", "path": "file",
}  # fmt: skip
"""Other names of the same schemes, as Hadoop, fsspec, ClearML and Supervisely write them; the config,
the CLI and the importers all read URLs through this one table."""
FS = "fs"
"""Supervisely's `fs://storage-id/path`: a folder known by an id, mapped by [[path_substitution]]."""
HTTP_SCHEMES = ("http", "https")
"""An Azure blob endpoint URL (https://account.blob.core.windows.net/container/path, or the endpoint of
a connection string or a config entry followed by container/path)."""
_ALL = (*SCHEMES, FS, *HTTP_SCHEMES)
_SUPPORTED = (
    f"supported: s3, gs, az, file, fs and https; aliases: {', '.join(SCHEME_ALIASES)}"
)
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"\[[0-9A-Fa-f:.]+\]|{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_AZURE_HOST_RE = re.compile(r"([^.]+)\.(?:blob|dfs)\.core\.windows\.net", re.IGNORECASE)


def canonical_scheme(scheme: str) -> str | None:
    """The scheme `scheme` (any case, or an alias) stands for; None for one mountfs does not read."""
    scheme = scheme.lower()
    scheme = SCHEME_ALIASES.get(scheme, scheme)
    return scheme if scheme in _ALL else None


def _scheme_of(text: str) -> tuple[str, str]:
    """Split "scheme://rest" into the canonical scheme and the rest, with a precise message for each way
    the front of a URL goes wrong."""
    match = _SCHEME_RE.match(text)
    if not match:
        raise InvalidValue(
            f'"{text}" is not a store URL', "expected scheme://bucket/prefix with scheme s3, gs, az or file"
        )
    written = match.group(1).lower()
    scheme = canonical_scheme(written)
    if scheme is None:
        near = closest(written, [*SCHEMES, FS, *SCHEME_ALIASES], cutoff=0.5)
        hint = f'did you mean "{near}://"?' if near else None
        if written in ("nfs", "smb", "cifs"):  # a network share is read where it is mounted
            hint = "a mounted network share is a local folder: write file:///path/to/it"
        raise InvalidValue(f'unknown scheme "{written}://" in "{text}" ({_SUPPORTED})', hint)
    if not match.group(2):
        if scheme == "file":
            raise InvalidValue(f'file URL "{text}" is not absolute', _FILE_HINT)
        rest = text[match.end() :].lstrip("/")
        raise InvalidValue(f'"{text}" is missing "//" after "{written}:"', f"write {written}://{rest}")
    return scheme, text[match.end() :]


FS = "fs"
"""Supervisely's `fs://storage-id/path`: a folder known by a name, served through the
[[path_substitution]] that maps `fs://storage-id` to a `file://` folder."""

_FILE_HINT = "use three slashes and an absolute path, e.g. file:///mnt/data"


def _check_name(what: str, name: str, lo: int, hi: int, allowed: str, allowed_text: str,
                *, edges: bool = True) -> None:
    if not lo <= len(name) <= hi:
        raise InvalidValue(f'{what} "{name}" is {len(name)} characters long (must be {lo} to {hi})')
    bad = sorted({c for c in name if c not in allowed})
    if bad:
        hint = "names are lowercase" if any(c.isupper() for c in bad) else None
        listed = ", ".join(f'"{c}"' for c in bad)
        raise InvalidValue(f'{what} "{name}" contains {listed} (allowed: {allowed_text})', hint)
    if edges and not (name[0] in _LOWER_DIGITS and name[-1] in _LOWER_DIGITS):
        raise InvalidValue(f'{what} "{name}" must start and end with a lowercase letter or digit')


_S3_LEGACY = _LOWER_DIGITS + _LOWER_DIGITS.upper() + "._-"


def _check_s3_bucket(name: str) -> None:
    """The widest rule of any S3 store (AWS's legacy names: upper case, "_", up to 255 characters,
    which path-style requests still reach); a store with a stricter rule answers with its own."""
    _check_name("S3 bucket name", name, 3, 255, _S3_LEGACY, 'letters, digits, ".", "-" and "_"', edges=False)
    if ".." in name:
        raise InvalidValue(f'S3 bucket name "{name}" must not contain ".."')
    if _IP_RE.fullmatch(name):
        raise InvalidValue(
            f'S3 bucket name "{name}" must not look like an IP address',
            f"an endpoint needs its port: s3://{name}:9000/bucket",
        )


def _check_gcs_bucket(name: str) -> None:
    _check_name(
        "GCS bucket name", name, 3, 222, _LOWER_DIGITS + ".-_", 'lowercase letters, digits, "-", "_" and "."'
    )


def check_azure_account(name: str) -> None:
    _check_name("Azure storage account name", name, 3, 24, _LOWER_DIGITS, "lowercase letters and digits")


def check_azure_container(name: str) -> None:
    # "_" is not Azure's, but Supervisely's own example names containers so: the store refuses
    # such a name at mount time, with the name, and `config import` of that example still works
    _check_name("Azure container name", name, 3, 63, _LOWER_DIGITS + "-_",
                'lowercase letters, digits, "-" and "_"')
    if "--" in name:
        raise InvalidValue(f'Azure container name "{name}" must not contain "--"')


def check_host_port(text: str) -> str:
    """Non-AWS endpoints always carry a port, which is also how a URL's host is told from a bucket."""
    if "@" in text:
        raise InvalidValue(
            f'"***@{text.rpartition("@")[2]}" carries credentials',
            "put them in [s3] or [[s3.credentials]], not in the URL",
        )
    host, sep, port = text.rpartition(":")
    if not sep:
        raise InvalidValue(f'host "{text}" has no port', f'write it as "host:port", e.g. "{text}:9000"')
    if not host:
        raise InvalidValue(f'"{text}" has a port but no host')
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise InvalidValue(f'port "{port}" in "{text}" must be a number from 1 to 65535')
    if not _HOST_RE.fullmatch(host):
        hint = "write an IPv6 address in brackets: [::1]:9000" if ":" in host else None
        raise InvalidValue(f'"{host}" is not a valid host name', hint)
    return text


def clean_prefix(prefix: str, what: str) -> str:
    """A prefix is a folder in the store: trailing slashes are dropped, but "//", "." and ".." are errors,
    because they cannot name a directory in the mounted tree."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return ""
    segments = prefix.split("/")
    if "" in segments:
        raise InvalidValue(f'{what} "{prefix}" has an empty segment ("//" or a leading "/")')
    if "." in segments or ".." in segments:
        raise InvalidValue(f'{what} "{prefix}" must not contain "." or ".." segments')
    return prefix


# "user@" or "user:password@" after the scheme and its slashes; a password may hold "/" (AWS secrets
# do), but "host:9000/bucket/a@b" is a port and a key with an "@", and "file:///a:b@c" is a path.
_USERINFO_RE = re.compile(
    r"^(\s*(?![Ff][Ii][Ll][Ee]:///)(?:[A-Za-z][A-Za-z0-9+.-]*)?:/*)(?!/)(?:[^/@:]*:(?!\d+(?:/|$))[^@]*|[^/]*)@"
)


_AZURE_SCHEMES = ("az", "azure", "abfs", "abfss", "wasb", "wasbs")
# Azure's container@account: a name before "@" and no ":" (a password would follow one).
_CONTAINER_AT_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://([^/@:]*)@")
# What may stand before that "@": a container's characters (any case: a name in capitals is told
# so), but not an access key id's shape, which is taken for credentials and never shown back.
_CONTAINER_CHARS_RE = re.compile(r"[A-Za-z0-9_$-]*")
_KEY_ID_RE = re.compile(r"[A-Z0-9]{16,}")


_HTTP_QUERY_RE = re.compile(r"(\s*[Hh][Tt][Tt][Pp][Ss]?://[^?#]*)[?#]")
# A "?" may be part of an object key, but not before a signature's parameters: that is a presigned
# URL or a SAS pasted as a store URL, whose secret must neither be kept as a prefix nor shown.
_SIGNED_QUERY_RE = re.compile(
    r"([^?]*)\?(?=(?:[^&]*&)*(?:sig|sv|X-Amz-[\w-]+|X-Goog-[\w-]+|Signature|AWSAccessKeyId|GoogleAccessId)=)",
    re.IGNORECASE,
)
_GCS_SCHEMES = ("gs", "gcs", "gcp", "google")


def _written_scheme(text: str) -> str:
    """The scheme as written, lowercased ("" without one), for messages before the URL is parsed."""
    return text.strip().partition(":")[0].lower()


def _credentials_hint(text: str) -> str:
    """Where the credentials of this URL's store belong."""
    scheme = _written_scheme(text)
    if scheme in _AZURE_SCHEMES:
        return "put them in [[azure.containers]] (account_key, sas_token) or AZURE_STORAGE_CONNECTION_STRING"
    if scheme in _GCS_SCHEMES:
        return "put a key file in [gcs] credentials_json or GOOGLE_APPLICATION_CREDENTIALS"
    return "put them in [s3] or [[s3.credentials]]"


def _container_at(text: str) -> bool:
    match = _CONTAINER_AT_RE.match(text)
    if not match or match.group(1).lower() not in _AZURE_SCHEMES:
        return False
    name = match.group(2)
    return bool(_CONTAINER_CHARS_RE.fullmatch(name)) and not _KEY_ID_RE.fullmatch(name)


def _userinfo(text: str) -> re.Match[str] | None:
    """Credentials before an "@", which no store URL may carry (Azure's container@account is no such)."""
    return None if _container_at(text) else _USERINFO_RE.match(text)


def shown_url(text: str) -> str:
    """A URL as messages may show it: without the credentials before an "@", and with control
    characters escaped, so an error line neither leaks a secret nor breaks the terminal."""
    query = _HTTP_QUERY_RE.match(text) or _SIGNED_QUERY_RE.match(text)
    if query:  # a SAS or other signature in the URL's query
        text = query.group(1) + "?***"
    if _container_at(text):
        return printable(text)
    return printable(_USERINFO_RE.sub(r"\1***@", text, count=1))


def _check_url_text(text: str) -> None:
    """What no store URL may hold, checked before any message quotes the URL back."""
    shown = shown_url(text)
    if _userinfo(text):
        if _written_scheme(text) in _AZURE_SCHEMES:
            raise InvalidValue(f'"{shown}" carries credentials, or a container name shaped like a key',
                               f"write az://container@account/path; credentials: {_credentials_hint(text)}")
        raise InvalidValue(f'"{shown}" carries credentials', f"{_credentials_hint(text)}, not in the URL")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise InvalidValue(f'URL "{shown}" contains a control character')
    if _HTTP_QUERY_RE.match(text):
        raise InvalidValue(
            f'"{shown}" carries a query (a SAS?)',
            "put a SAS in [[azure.containers]] sas_token or AZURE_STORAGE_SAS_TOKEN, not in the URL",
        )
    if _SIGNED_QUERY_RE.match(text):
        raise InvalidValue(f'"{shown}" carries a signature (a presigned URL or a SAS?)',
                           f"{_credentials_hint(text)}, not in the URL")


def parse_url(text: str, *, bucketless: bool = False) -> StoreUrl:
    """One URL names store, bucket and prefix: how a mount is written, in a file or on the command line.
    `bucketless`: a [[mount]] URL may also name a whole endpoint (`s3://host:port/`, `s3://`, `gs://`,
    `az://@account/`), whose buckets are listed at mount time; its bucket is "".

    Context-free: an Azure URL without its account (`az://container/path`), Supervisely's
    `fs://storage-id/path` and an http(s) URL that is not on core.windows.net come back unresolved
    (see `unresolved`); `resolve_url` in config/mounts.py completes them with the config's help."""
    if not isinstance(text, str):
        raise InvalidValue(f"expected a URL string, got {type(text).__name__}")
    _check_url_text(text)
    scheme, rest = _scheme_of(text.strip())
    if bucketless:
        whole = _bucketless(scheme, rest)
        if whole is not None:
            return StoreUrl(scheme, whole or None, "", "", text)
    if scheme == "file":
        if not rest.startswith("/"):
            raise InvalidValue(f'file URL "{text}" is not absolute', _FILE_HINT)
        segments = [s for s in rest.split("/") if s not in ("", ".")]
        if ".." in segments:
            raise InvalidValue(f'file URL "{text}" must not contain ".." segments')
        return StoreUrl("file", None, "/" + "/".join(segments), "", text)
    first, _, tail = rest.partition("/")
    host: str | None = None
    if scheme in HTTP_SCHEMES:
        return _http_url(text, scheme, first, tail)
    if scheme == FS:
        if not first:
            raise InvalidValue(f'"{text}" has no storage id', "expected fs://storage-id/path")
        if first in (".", ".."):
            raise InvalidValue(f'storage id "{first}" in "{text}" is not a name', "expected fs://storage-id/path")
        return StoreUrl(FS, None, first, clean_prefix(tail, "path"), text)
    if scheme == "az" and "@" in first:  # container@account, as adlfs and Hadoop write it
        bucket, _, account = first.partition("@")
        host = _azure_account_host(text, account)
        check_azure_container(bucket)
    elif scheme == "az" and _AZURE_HOST_RE.fullmatch(first):  # as ClearML writes it
        return _http_url(text, "https", first, tail)
    elif scheme == "az":  # container-first or account-first: decided by resolve_url
        if not first:
            raise InvalidValue(f'"{text}" has no container', f"expected {_AZURE_FORMS}")
        bucket = first
        check_azure_container(bucket)
    elif scheme == "s3" and (":" in first or "@" in first):
        host = check_host_port(first)
        bucket, _, tail = tail.partition("/")
        if not bucket and tail:
            raise InvalidValue(f'"{text}" has no bucket after the host "{host}"',
                               "expected s3://host:port/bucket/prefix, or s3://host:port/ for every bucket")
        if bucket:  # "" is every bucket of the endpoint, one directory each
            _check_s3_bucket(bucket)
    else:
        bucket = first
        if not bucket:
            raise InvalidValue(f'"{text}" has no bucket', f"expected {scheme}://bucket/prefix")
        (_check_s3_bucket if scheme == "s3" else _check_gcs_bucket)(bucket)
    return StoreUrl(scheme, host, bucket, clean_prefix(tail, "prefix"), text)


_AZURE_FORMS = (
    "az://container@account/path, az://container/path with an account configured, "
    "abfss://container@account.dfs.core.windows.net/path or https://account.blob.core.windows.net/container/path"
)


def _azure_account_host(text: str, host: str) -> str:
    """The account of "account" or "account.blob|dfs.core.windows.net" (after a container's "@")."""
    account = host
    if "." in host:
        match = _AZURE_HOST_RE.fullmatch(host)
        if match is None:
            raise InvalidValue(
                f'"{host}" in "{text}" is not an Azure storage account',
                "expected account or account.blob.core.windows.net; another cloud's endpoint goes in "
                "[[azure.containers]] endpoint or the connection string",
            )
        account = match.group(1)
    check_azure_account(account)
    return account


def _http_url(text: str, scheme: str, host: str, tail: str) -> StoreUrl:
    """https://account.blob.core.windows.net/container/path is Azure; any other http(s) URL is kept as
    host and path, for resolve_url to match against the Azure endpoints the config knows."""
    if not host:
        raise InvalidValue(f'"{text}" has no host', f"expected {_AZURE_FORMS}")
    match = _AZURE_HOST_RE.fullmatch(host)
    if match is None:
        return StoreUrl(scheme, host, "", clean_prefix(tail, "path"), text)
    account = match.group(1)
    check_azure_account(account)
    container, _, tail = tail.partition("/")
    if not container:
        raise InvalidValue(f'"{text}" has no container', "expected https://account.blob.core.windows.net/container/path")
    check_azure_container(container)
    return StoreUrl("az", account, container, clean_prefix(tail, "prefix"), text)


def _bucketless(scheme: str, rest: str) -> str | None:
    """The host (or "" for the store's default) of a URL naming a whole endpoint; None if it names a
    bucket. Only S3, GCS and Azure can list their buckets."""
    whole = rest.rstrip("/")
    if scheme in ("s3", "gs") and whole == "":
        return ""
    if scheme == "s3" and "/" not in whole and (":" in whole or "@" in whole):
        return check_host_port(whole)
    if scheme == "az" and whole.startswith("@") and "/" not in whole:
        account = whole[1:].split(".", 1)[0]
        check_azure_account(account)
        return account
    return None


def unresolved(url: StoreUrl) -> bool:
    """True for a URL that names no store until the config completes it: an Azure container without
    its account, an fs:// storage id, an http(s) URL on no known Azure endpoint."""
    return (url.scheme == "az" and url.host is None) or url.scheme == FS or url.scheme in HTTP_SCHEMES


def check_glob_url(text: str) -> None:
    """A glob is not a bucket URL: only its scheme (and a file glob's absoluteness) can be checked.
    `file://*`, as ClearML writes "every file URL", starts with a wildcard and is accepted."""
    _check_url_text(text)
    scheme, rest = _scheme_of(text.strip())
    if scheme == "file" and not rest.startswith(("/", "*", "?", "[")):
        raise InvalidValue(f'file URL "{text}" is not absolute', _FILE_HINT)


def check_plain_name(text: str) -> None:
    """Credential entries only name what they apply to (the URLs are checked in full), but a URL pasted
    where a bare name belongs would silently never match."""
    if "/" in text or ":" in text or any(c.isspace() for c in text):
        hint = None
        shown = shown_url(text)
        if "@" in text:
            shown = "***@" + text.rpartition("@")[2] if shown == text else shown
        elif "://" in text:
            _, _, rest = text.partition("://")
            hint = f'write "{rest.split("/")[0]}"'
        raise InvalidValue(f'"{shown}" is not a plain name (a URL or path?)', hint)


def check_endpoint(text: str) -> None:
    _check_url_text(text)
    if not re.match(r"https?://[^/\s]+", text):
        raise InvalidValue(f'endpoint "{text}" is not an http:// or https:// URL')


ADDRESSING_STYLES = ("auto", "path", "virtual")


def check_addressing_style(text: str) -> None:
    if text not in ADDRESSING_STYLES:
        raise InvalidValue(
            f'addressing_style "{text}" is not one of {", ".join(ADDRESSING_STYLES)}',
            '"path" (https://host/bucket/key) suits most S3-compatible servers',
        )
