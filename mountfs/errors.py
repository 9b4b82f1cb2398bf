"""One error hierarchy for every layer, and the one table that maps it to errno.

Store adapters translate their SDK's exceptions into these; the FUSE layer turns them into
`FUSEError(errno_for(exc))`. Nothing above the adapters needs to know which SDK raised.
"""

from __future__ import annotations

import errno
import re

# "scheme://user@" or "scheme://user:password@" anywhere in a message (a password may hold "/"; a
# port followed by a path, as in "host:9000/bucket/a@b", is no password)
_CREDENTIALS_RE = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*:/*)(?!/)(?:[^/@:\s\"]*:(?!\d+(?:/|$))[^@\s\"]*|[^/@\s\"]*)@"
)


def printable(text: str) -> str:
    """`text` as one line of printable characters: control characters (a newline, an escape
    sequence from a file name or URL) are shown escaped, never sent to the terminal as they are."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_AZURE_SCHEMES = ("az", "azure", "abfs", "abfss", "wasb", "wasbs")


def _hidden(match: re.Match[str]) -> str:
    """Azure's container@account names a container, not a user: only a password (after ":") is hidden."""
    front = match.group(1)
    if front.rstrip(":/").lower() in _AZURE_SCHEMES and ":" not in match.group(0)[len(front):]:
        return match.group(0)
    return front + "***@"


# The parameters of a presigned URL or an Azure SAS that carry its secret (or name its key).
_SIGNATURE_RE = re.compile(
    r"([?&](?:sig|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|X-Goog-Signature|X-Goog-Credential"
    r"|Signature|AWSAccessKeyId|GoogleAccessId)=)[^&\s\"'#:,)]*",
    re.IGNORECASE,
)


def without_credentials(text: str) -> str:
    """`text` with the credentials of any URL in it replaced by "***": a user and password before
    "@", and the signature in a query (a CA bundle or an include fetched from a presigned URL)."""
    if "@" in text:
        text = _CREDENTIALS_RE.sub(_hidden, text)
    return _SIGNATURE_RE.sub(r"\1***", text) if "=" in text else text


# An HTTP Authorization header as SDKs log it at debug level: the key id of an AWS signature, the
# signature itself (replayable for minutes), a bearer token, an Azure shared key's signature.
_AUTH_HEADER_RE = re.compile(
    r"(\bCredential=)[^/\s,'\"&#]+"
    r"|((?<![?&\w])Signature=)[^\s,'\"&]+"
    r"|(\bBearer\s+)[^\s,'\"]+"
    r"|(\bSharedKey(?:Lite)?\s+[^:\s,'\"]+:)[^\s,'\"]+",
    re.IGNORECASE,
)


def without_secrets(text: str) -> str:
    """`text` with the credentials of URLs (`without_credentials`) and of HTTP Authorization
    headers (a key id, a signature, a token) replaced by "***": for log lines, where an SDK's debug
    output shows the headers of each request."""
    text = without_credentials(text)
    return _AUTH_HEADER_RE.sub(lambda m: next(g for g in m.groups() if g is not None) + "***", text)


class MountfsError(Exception):
    """Base of every error mountfs raises on purpose."""


class NotFound(MountfsError):
    """The object, prefix, bucket or path does not exist."""


class Stale(MountfsError):
    """The object changed since it was opened: its ETag no longer matches."""


class Transient(MountfsError):
    """A failure worth retrying: throttling, 5xx, a reset connection, a timeout."""


class Throttled(Transient):
    """The store asked us to slow down (SlowDown, 429, 503): retried after a pause that is never short."""


class StoreUnavailable(MountfsError):
    """The store cannot be reached (after retries), or is not readable at all."""


class Offline(StoreUnavailable):
    """Refused without asking: the store is known to be down (see `AsyncStore`)."""


class Misconfigured(StoreUnavailable):
    """The store's answer shows a setting is wrong (https to a plain-http server, an untrusted
    certificate): retrying cannot help, and the message says what to set."""


class Rejected(StoreUnavailable):
    """The store answered that it will not take this request as it is (a 4xx such as a key too
    long or an argument it refuses): sending it again cannot help, so nothing retries it."""


class AccessDenied(MountfsError):
    """The credentials do not allow this operation."""


class NoCredentials(AccessDenied):
    """No credentials were found to sign with: the message says what to set."""


class ReadOnly(MountfsError):
    """A write was attempted on a read-only mount or entry."""


class NotADirectory(MountfsError):
    """A path component is a file where a directory was expected."""


class IsADirectory(MountfsError):
    """A directory was opened as a file."""


class NotEmpty(MountfsError):
    """A directory that still has entries cannot be removed."""


class Exists(MountfsError):
    """The name is already taken (mkdir of an existing entry, rename with RENAME_NOREPLACE)."""


class NotPermitted(MountfsError):
    """The operation is never allowed here, e.g. removing or renaming the root of a mount."""


class CrossDevice(MountfsError):
    """A rename between two mounts (two stores): the caller copies instead (`mv` does)."""


class InvalidArgument(MountfsError):
    """A request that makes no sense, e.g. moving a directory into itself."""


class NoSpace(MountfsError):
    """The cache disk is full."""


class NameTooLong(MountfsError):
    """A name the store cannot hold: a path component over 255 bytes, or a key over its limit."""


class UploadFailed(MountfsError):
    """Staged data could not be uploaded after retries: flush/fsync fail (EIO), the data stays staged
    and is retried in the background."""


class Unsupported(MountfsError):
    """The store or this version of mountfs does not implement the operation."""


class ConfigError(MountfsError):
    """A config file (or URL) that cannot be used; carries where and why, so users can fix it."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: "
        if self.key:
            text += f"{self.key}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        # one line, whatever a file name or value held, and no URL's credentials in it
        return printable(without_credentials(text))


class ConfigErrors(MountfsError):
    """Every problem found in one config file, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.format() for e in errors))


ERRNO_TABLE: dict[type[MountfsError], int] = {
    NotFound: errno.ENOENT,
    Stale: errno.ESTALE,
    Transient: errno.EIO,
    StoreUnavailable: errno.EIO,
    AccessDenied: errno.EACCES,
    ReadOnly: errno.EROFS,
    NotADirectory: errno.ENOTDIR,
    IsADirectory: errno.EISDIR,
    NotEmpty: errno.ENOTEMPTY,
    Exists: errno.EEXIST,
    NotPermitted: errno.EPERM,
    CrossDevice: errno.EXDEV,
    InvalidArgument: errno.EINVAL,
    NoSpace: errno.ENOSPC,
    NameTooLong: errno.ENAMETOOLONG,
    UploadFailed: errno.EIO,
    Unsupported: errno.ENOSYS,
    ConfigError: errno.EINVAL,
    ConfigErrors: errno.EINVAL,
}


def errno_for(exc: BaseException) -> int:
    """The errno a FUSE reply should carry for `exc`; EIO for anything not in the table."""
    for cls in type(exc).__mro__:
        if cls in ERRNO_TABLE:
            return ERRNO_TABLE[cls]
    return errno.EIO
