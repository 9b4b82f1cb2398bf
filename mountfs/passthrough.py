"""Direct access and path substitution: which URLs bypass the block cache, and which are served
from somewhere else. Pure functions of the config (no I/O), so the FUSE layer and the CLI agree.

The two sections follow ClearML's, so a clearml.conf moves over unchanged:

- `[[path_substitution]]`: a URL under `registered_prefix` is read from `local_prefix` instead
  (a bucket mirrored on NFS). The longest registered prefix wins, and a prefix matches whole path
  segments only: "s3://b/research" covers "s3://b/research" and "s3://b/research/x", never
  "s3://b/research2". Trailing slashes on either prefix do not matter.
- `[[direct_access]]`: URLs matching one of these globs (fnmatch on the whole URL: `*` crosses
  "/", as in ClearML) are served from their local path with no cache: a local or NFS file is
  already as close as a cached copy. With none configured, `file://*` applies, as in ClearML;
  `direct_access = []` (or the mount option `-o cache_local`) turns direct access off.
  An entry may give a `content_type` glob instead of, or beside, its `url` glob (both must then
  match): ClearML's "available for url and content_type". It is matched case-insensitively
  against the object's content type, which for a local file is what `mimetypes` guesses from its
  name. Direct access means serving the file itself, so it applies to files that have a local
  path (file:// mounts and path-substituted ones) only; an object of S3, GCS or Azure has none
  and always goes through the block cache, whatever its content type.

URLs are taken literally, as everywhere in mountfs: "%20" is three characters of an object key
or a file name, not an escaped space. Schemes compare case-insensitively, the rest exactly.
"""

from __future__ import annotations

import fnmatch
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mountfs.config import Config, DirectAccess, PathSubstitution
from mountfs.config.urls import canonical_scheme

DEFAULT_DIRECT_ACCESS = (DirectAccess("file://*"),)


@dataclass(frozen=True)
class Resolved:
    """Where a URL is served from: `url` after substitution; `direct` if it bypasses the cache;
    `local_path` the file to read when it is a direct file:// URL (None otherwise)."""

    url: str
    direct: bool
    local_path: str | None


def _split(url: str) -> tuple[str, str] | None:
    """(canonical scheme, the rest after "://"), or None when `url` has no scheme: an alias
    (s3a://, gcs://, abfs://...) is its scheme: a rule written with one covers URLs written with another."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return None
    return canonical_scheme(scheme) or scheme.lower(), rest


def _normal_prefix(prefix: str) -> tuple[str, str] | None:
    """A prefix as (scheme, rest without trailing slashes)."""
    parts = _split(prefix.strip())
    return None if parts is None else (parts[0], parts[1].rstrip("/"))


def _normal_url(url: str) -> str | None:
    """A URL with its scheme in lower case; a file:// URL also with its path normalized ("//" and
    "." collapsed, a trailing "/" kept). None for a file URL that is not absolute or climbs with
    ".." (which could otherwise step out of a direct-access glob)."""
    parts = _split(url)
    if parts is None:
        return None
    scheme, rest = parts
    if scheme != "file":
        return f"{scheme}://{rest}"
    path = local_path(url)
    if path is None:
        return None
    return "file://" + path + ("/" if rest.endswith("/") and path != "/" else "")


def substitute(url: str, rules: Sequence[PathSubstitution]) -> str:
    """`url` with the longest matching registered prefix replaced by its local prefix; unchanged
    when no rule matches."""
    found = _rule_for(url, rules)
    if found is None:
        return url
    prefix, local, rest = found
    local_parts = _normal_prefix(local)
    if local_parts is None:
        return url
    return f"{local_parts[0]}://{local_parts[1]}{rest[len(prefix):]}"


def substitution_base(url: str, rules: Sequence[PathSubstitution]) -> str | None:
    """The local folder (a path) of the rule that substitutes `url`, when it is a file:// one: what
    `url`'s substitute must stay inside, whatever symlinks the part below it holds."""
    found = _rule_for(url, rules)
    return None if found is None else local_path(found[1])


def _rule_for(url: str, rules: Sequence[PathSubstitution]) -> tuple[str, str, str] | None:
    """(registered rest, local prefix, `url`'s rest) of the longest registered prefix covering `url`."""
    parts = _split(url)
    if parts is None:
        return None
    scheme, rest = parts
    best: tuple[int, str, str] | None = None  # (length of the registered rest, its rest, local prefix)
    for rule in rules:
        registered = _normal_prefix(rule.registered_prefix)
        if registered is None or registered[0] != scheme:
            continue
        prefix = registered[1]
        covered = rest == prefix or rest.startswith(prefix + "/")
        if covered and (best is None or len(prefix) > best[0]):
            best = (len(prefix), prefix, rule.local_prefix)
    return None if best is None else (best[1], best[2], rest)


_Rule = tuple[re.Pattern[str] | None, re.Pattern[str] | None]
"""A compiled [[direct_access]] entry: (URL pattern, content-type pattern); None matches anything."""


def _compile(globs: Sequence[DirectAccess]) -> list[_Rule]:
    rules: list[_Rule] = []
    for glob in globs:
        url_pattern = None
        if glob.url is not None:
            parts = _split(glob.url.strip())
            text = glob.url.strip() if parts is None else f"{parts[0]}://{parts[1]}"
            url_pattern = re.compile(fnmatch.translate(text))
        type_pattern = None
        if glob.content_type is not None:
            type_pattern = re.compile(fnmatch.translate(glob.content_type.strip().lower()))
            mimetypes.init()  # reads the system's mime.types now, at set-up, not at the first lookup
        rules.append((url_pattern, type_pattern))
    return rules


def is_direct(url: str, globs: Sequence[DirectAccess] = DEFAULT_DIRECT_ACCESS,
              content_type: str | None = None) -> bool:
    """True if `url` matches a direct-access entry (pass the configured ones; none means the default)."""
    return _matches(url, _compile(globs or DEFAULT_DIRECT_ACCESS), content_type)


def content_type_of(url: str) -> str | None:
    """The content type `url` is known by without asking a store: mimetypes' guess from its name."""
    if url.endswith("/"):
        return None
    return mimetypes.guess_type(url, strict=False)[0]


def _matches(url: str, rules: Sequence[_Rule], content_type: str | None = None, folder: bool = False) -> bool:
    """`content_type` None: guessed from the name when an entry asks for one. `folder`: `url` is a
    folder, which has no content type (only URL-only entries can cover it)."""
    normal = _normal_url(url)
    if normal is None:
        return False
    guessed: list[str | None] = []  # guessed once, when first needed

    def type_matches(pattern: re.Pattern[str]) -> bool:
        if folder:
            return False
        if not guessed:
            found = content_type or content_type_of(normal)
            guessed.append(found.split(";")[0].strip().lower() if found else None)
        return guessed[0] is not None and pattern.match(guessed[0]) is not None

    return any((url_pattern is None or url_pattern.match(normal) is not None)
               and (type_pattern is None or type_matches(type_pattern))
               for url_pattern, type_pattern in rules)


def local_path(url: str) -> str | None:
    """The absolute local path of a file:// URL ("file:///mnt/a/b" -> "/mnt/a/b"); None for other
    schemes, relative file URLs, and paths with ".." segments."""
    parts = _split(url)
    if parts is None or parts[0] != "file" or not parts[1].startswith("/"):
        return None
    segments = [s for s in parts[1].split("/") if s not in ("", ".")]
    if ".." in segments or "\0" in parts[1]:
        return None
    return "/" + "/".join(segments)


class Passthrough:
    """The configured rules, compiled once: what the FUSE layer asks for every opened path."""

    def __init__(self, direct_access: Sequence[DirectAccess] | None = None,
                 path_substitution: Sequence[PathSubstitution] = ()) -> None:
        """`direct_access` None: the default globs; an empty sequence: nothing is direct."""
        self.direct_access = DEFAULT_DIRECT_ACCESS if direct_access is None else tuple(direct_access)
        self.path_substitution = tuple(path_substitution)
        self._patterns = _compile(self.direct_access)

    @classmethod
    def from_config(cls, config: Config) -> Passthrough:
        return cls(config.direct_access, config.path_substitution)

    def substitute(self, url: str) -> str:
        return substitute(url, self.path_substitution)

    def substitution_base(self, url: str) -> str | None:
        return substitution_base(url, self.path_substitution)

    def is_direct(self, url: str, content_type: str | None = None, *, folder: bool = False) -> bool:
        """`content_type`: the object's, when known (else guessed from the name if an entry needs
        one); `folder`: `url` is a whole folder, which only URL-only entries cover."""
        return _matches(url, self._patterns, content_type, folder)

    def prefixes_inside(self, url: str) -> list[tuple[str, str]]:
        """The registered prefixes strictly inside `url` (a mount's URL), as (the path relative
        to it, the registered prefix), shallowest first: each is grafted into that mount."""
        parts = _split(url)
        if parts is None:
            return []
        scheme, rest = parts
        base = rest.rstrip("/")
        found = []
        for rule in self.path_substitution:
            registered = _normal_prefix(rule.registered_prefix)
            if registered is None or registered[0] != scheme or not registered[1].startswith(base + "/"):
                continue
            relative = "/".join(s for s in registered[1][len(base) + 1:].split("/") if s)
            if relative and ".." not in relative.split("/"):
                found.append((relative, f"{scheme}://{registered[1]}"))
        return sorted(set(found), key=lambda item: (item[0].count("/"), item[0]))

    def local_path(self, url: str) -> str | None:
        return local_path(url)

    def resolve(self, url: str) -> Resolved:
        """Substitution first, then the direct-access globs on the substituted URL (a bucket
        mirrored on NFS is then read from NFS directly when a glob covers it)."""
        target = self.substitute(url)
        direct = self.is_direct(target)
        return Resolved(target, direct, local_path(target) if direct else None)
