"""[[mount]], [[direct_access]] and [[path_substitution]]: what appears where in the tree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mountfs.config.azure import endpoint_account, resolve_account
from mountfs.config.model import AzureConfig, DirectAccess, MountConfig, PathSubstitution, StoreUrl
from mountfs.config.reader import ABSENT, Reader, Table
from mountfs.config.toml_text import Path, dotted
from mountfs.config.urls import FS, HTTP_SCHEMES, check_glob_url, parse_url, unresolved
from mountfs.config.values import InvalidValue

_MOUNT_KEYS = ("path", "url", "read_only", "objects", "optional")


def _mount_path_problem(path: str) -> tuple[str, str | None] | None:
    if path == "":
        return None  # the mount root; checked against the other mounts later
    if "\0" in path:
        return "must not contain a NUL character", None
    if path.startswith("/"):
        return f'mount path "{path}" must be relative', f'write "{path.strip("/")}"'
    if path.endswith("/"):
        return f'mount path "{path}" must not end with "/"', f'write "{path.rstrip("/")}"'
    segments = path.split("/")
    if "" in segments:
        return f'mount path "{path}" has an empty segment ("//")', None
    if "." in segments or ".." in segments:
        return f'mount path "{path}" must not contain "." or ".." segments', None
    for segment in segments:
        size = len(segment.encode("utf-8", "surrogatepass"))
        if size > NAME_MAX:
            shown = segment if len(segment) <= 40 else segment[:37] + "..."
            return f'mount path segment "{shown}" is {size} bytes long (at most {NAME_MAX})', None
    return None


NAME_MAX = 255
"""The longest file name (in bytes) the kernel takes: a mount path segment is a directory name."""


@dataclass
class _SeenMounts:
    """The mount paths taken so far (with where each was given), and every parent directory of one
    (with a mount path under it)."""

    paths: dict[str, Path] = field(default_factory=dict)
    under: dict[str, str] = field(default_factory=dict)


def resolve_url(url: StoreUrl, azure: AzureConfig, substitutions: tuple[PathSubstitution, ...]) -> StoreUrl:
    """A URL the grammar alone cannot complete, completed by the config (and the environment): the
    account of az://container/path, the container of an https URL on a known Azure endpoint. An
    fs://storage-id must have a [[path_substitution]] to a folder (applied at mount time)."""
    if not unresolved(url):
        return url
    if url.scheme == "az":
        return resolve_account(url, azure)
    if url.scheme in HTTP_SCHEMES:
        return endpoint_account(url, azure)
    assert url.scheme == FS
    if not any(_covers(rule.registered_prefix, url) for rule in substitutions):
        raise InvalidValue(
            f'storage id "{url.bucket}" of "{url.raw}" is mapped to no folder',
            f'add [[path_substitution]] with registered_prefix = "fs://{url.bucket}" and '
            'local_prefix = "file:///path/to/its/folder"')
    return url


def _covers(registered: str, url: StoreUrl) -> bool:
    """Whether a registered prefix is, or holds, `url` (whole path segments only)."""
    try:
        prefix = parse_url(registered)
    except InvalidValue:
        return False
    if (prefix.scheme, prefix.bucket) != (url.scheme, url.bucket):
        return False
    return not prefix.prefix or url.prefix == prefix.prefix or url.prefix.startswith(prefix.prefix + "/")


def mounts_section(r: Reader, root: Table, *, required: bool = True,
                   resolve: Callable[[StoreUrl], StoreUrl] | None = None) -> tuple[MountConfig, ...]:
    """`resolve`: what completes a URL the grammar leaves unresolved (see `resolve_url`)."""
    value = root.get("mount", ABSENT)
    if (value is ABSENT or value == []) and not required:
        return ()
    if value is ABSENT or value == []:
        r.error(
            ("mount",),
            "no [[mount]] table: a config needs at least one",
            'add [[mount]] with path = "name" and url = "s3://bucket/prefix"',
        )
        return ()
    out: list[MountConfig] = []
    seen = _SeenMounts()
    for ipath, t in r.tables(value, ("mount",), _MOUNT_KEYS, "mount"):
        mount_path = r.str_(
            t,
            ipath,
            "path",
            required=True,
            allow_empty=True,
            hint='every [[mount]] needs path = "name" (a directory under the mount point)',
        )
        url = _mount_url(r, t, ipath)
        read_only = r.bool_(t, ipath, "read_only", False)
        optional = r.bool_(t, ipath, "optional", False)
        objects = _objects(r, t, ipath, url)
        if objects is not None:
            read_only = True
        if mount_path is not None:
            problem = _mount_path_problem(mount_path)
            if problem:
                r.error((*ipath, "path"), *problem)
                mount_path = None
            elif _mount_conflict(r, mount_path, (*ipath, "path"), seen):
                mount_path = None
        if url is not None and resolve is not None:
            try:
                url = resolve(url)
            except InvalidValue as exc:
                r.value_error((*ipath, "url"), exc)
                url = None
        if mount_path is not None and url is not None:
            out.append(MountConfig(mount_path, url, read_only, objects=objects, optional=optional))
    return tuple(out)


def _mount_url(r: Reader, t: Table, path: Path) -> StoreUrl | None:
    """A mount's URL may name a whole endpoint (bucket ""): its buckets are listed at mount time."""
    value = r.str_(t, path, "url", required=True, hint='every [[mount]] needs url = "s3://bucket/prefix"')
    if value is None:
        return None
    try:
        return parse_url(value, bucketless=True)
    except ValueError as exc:
        r.value_error((*path, "url"), exc)
        return None


MAX_OBJECTS = 1_000_000
"""More keys than a links file of a few MiB could name."""


def _objects(r: Reader, t: Table, path: Path, url: StoreUrl | None) -> tuple[str, ...] | None:
    """`objects = ["key", ...]`: keys under the URL's prefix, each a path of the mounted tree."""
    value = r.raw(t, path, "objects")
    if value is ABSENT:
        return None
    where = (*path, "objects")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        r.type_error(where, "an array of object keys (strings)", value)
        return None
    if len(value) > MAX_OBJECTS:
        r.error(where, f"{len(value)} keys: at most {MAX_OBJECTS} (mount the bucket instead)")
        return None
    if url is not None and url.bucket == "":
        r.error(where, "needs a URL that names a bucket", "write url = \"s3://bucket\"")
        return None
    keys: dict[str, None] = {}
    for i, key in enumerate(value):
        try:
            check_object_key(key)
        except InvalidValue as exc:
            r.error((*where, i), exc.message, exc.hint)
            continue
        keys[key] = None
    return tuple(keys)


def check_object_key(key: str) -> None:
    """A key shown as a file: every segment a file name the tree can hold."""
    if not key:
        raise InvalidValue("an empty key")
    if "\0" in key:
        raise InvalidValue("a key must not contain a NUL character")
    if key.startswith("/") or key.endswith("/"):
        raise InvalidValue(f'key "{key}" must not start or end with "/"')
    segments = key.split("/")
    if "" in segments:
        raise InvalidValue(f'key "{key}" has an empty segment ("//")')
    if "." in segments or ".." in segments:
        raise InvalidValue(f'key "{key}" must not contain "." or ".." segments')
    for segment in segments:
        if len(segment.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise InvalidValue(f'key "{key[:60]}..." has a segment longer than {NAME_MAX} bytes')


def _mount_conflict(r: Reader, new: str, path: Path, seen: _SeenMounts) -> bool:
    """Mount paths form a tree of disjoint directories: no duplicates, none inside another.
    Looked up by path and by each parent, so a config of many mounts is checked in linear time."""
    conflict: tuple[str, str, str | None] | None = None
    if new in seen.paths:
        conflict = (f'mount path "{new}" is already used by', new, None)
    elif seen.paths and (new == "" or "" in seen.paths):
        old = "" if "" in seen.paths else next(iter(seen.paths))
        conflict = ('mount path "" (the mount root) cannot be combined with other mounts (', old,
                    'give every mount its own path = "name"')  # fmt: skip
    else:
        parents = [new[:i] for i, c in enumerate(new) if c == "/"]
        inside = next((p for p in parents if p in seen.paths), None)
        if inside is not None:
            conflict = (f'mount path "{new}" is inside mount path "{inside}" (', inside, None)
        elif new in seen.under:
            old = seen.under[new]
            conflict = (f'mount path "{new}" contains mount path "{old}" (', old, None)
    if conflict is None:
        seen.paths[new] = path
        for i, c in enumerate(new):
            if c == "/":
                seen.under.setdefault(new[:i], new)
        return False
    message, old, hint = conflict
    old_path = seen.paths[old]
    line = r.locator.line(old_path)
    where = dotted(old_path[:-1]) + (f" at line {line}" if line is not None else "")
    if message.endswith("("):
        message += f"{where})"
    else:
        message += f" {where}"
    r.error(path, message, hint)
    return True


def direct_access_section(r: Reader, root: Table) -> tuple[DirectAccess, ...] | None:
    out: list[DirectAccess] = []
    value = root.get("direct_access", ABSENT)
    if value is ABSENT:
        return None  # the default applies; `direct_access = []` turns direct access off
    for ipath, t in r.tables(value, ("direct_access",), ("url", "content_type"), "direct_access"):
        if "url" not in t and "content_type" not in t:
            r.error(ipath, "needs url or content_type (or both)",
                    'e.g. url = "file:///mnt/nfs/*" or content_type = "video/*"')
            continue
        url = r.checked_str(t, ipath, "url", check_glob_url, required="url" in t)
        content_type = r.checked_str(t, ipath, "content_type", _check_content_type_glob,
                                     required="content_type" in t)
        if (url is not None or "url" not in t) and (content_type is not None or "content_type" not in t):
            out.append(DirectAccess(url, content_type))
    return tuple(out)


def _check_content_type_glob(text: str) -> None:
    """A glob of media types ("video/*", "application/x-tar"): parameters are not matched."""
    if not text.isprintable() or any(c.isspace() for c in text) or ";" in text:
        raise InvalidValue(f'"{text}" is not a content-type glob',
                           'e.g. "video/*" or "application/octet-stream", without spaces or parameters')


def path_substitution_section(r: Reader, root: Table) -> tuple[PathSubstitution, ...]:
    out: list[PathSubstitution] = []
    value = root.get("path_substitution", ABSENT)
    keys = ("registered_prefix", "local_prefix")
    for ipath, t in r.tables(value, ("path_substitution",), keys, "path_substitution"):
        registered = r.checked_str(t, ipath, "registered_prefix", parse_url, required=True)
        local = r.checked_str(t, ipath, "local_prefix", parse_url, required=True)
        if registered is not None and local is not None:
            out.append(PathSubstitution(registered, local))
    return tuple(out)
