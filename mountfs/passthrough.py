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

URLs are taken literally, as everywhere in mountfs: "%20" is three characters of an object key
or a file name, not an escaped space. Schemes compare case-insensitively, the rest exactly.
"""

from __future__ import annotations

import fnmatch
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


def _compile(globs: Sequence[DirectAccess]) -> list[re.Pattern[str]]:
    patterns = []
    for glob in globs:
        parts = _split(glob.url.strip())
        text = glob.url.strip() if parts is None else f"{parts[0]}://{parts[1]}"
        patterns.append(re.compile(fnmatch.translate(text)))
    return patterns


def is_direct(url: str, globs: Sequence[DirectAccess] = DEFAULT_DIRECT_ACCESS) -> bool:
    """True if `url` matches a direct-access glob (pass the configured ones; none means the default)."""
    return _matches(url, _compile(globs or DEFAULT_DIRECT_ACCESS))


def _matches(url: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    normal = _normal_url(url)
    return normal is not None and any(p.match(normal) for p in patterns)


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

    def is_direct(self, url: str) -> bool:
        return _matches(url, self._patterns)

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
