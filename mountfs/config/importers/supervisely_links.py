"""A Supervisely links file (the Links plugin's .txt): one `PROVIDER://BUCKET/OBJECT` per line, with
PROVIDER s3, google, azure or fs. It mounts read-only as a tree of just those objects,
`PROVIDER/BUCKET/OBJECT`; the credentials come from the `.env` or `remote_links.yml` named with
`-o config=` (an Azure link's account too: the [[azure.containers]] entry of its container, else the
only account there).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mountfs.config.importers import Imported
from mountfs.config.importers.supervisely_env import escape
from mountfs.config.mounts import check_object_key
from mountfs.config.values import InvalidValue

if TYPE_CHECKING:
    from mountfs.config.model import Config, StoreUrl

NAME = "supervisely_links"
FORMAT = "Supervisely links file"
SCHEMES = {"s3": "s3", "google": "gs", "azure": "az", "fs": "fs"}
_LINK = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)")
MAX_ERRORS = 20


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#")]


def looks_like(path: str, text: str) -> bool:
    """The first line that is not blank or a comment is a link: never so in TOML, .env or YAML."""
    lines = _lines(text[:4096])
    return bool(lines) and _LINK.fullmatch(lines[0][1]) is not None and " " not in lines[0][1].split("/")[0]


def import_text(path: str, text: str) -> Imported:
    out = Imported(FORMAT, {})
    groups: dict[tuple[str, str], dict[str, None]] = {}
    first_line: dict[tuple[str, str], int] = {}  # of each bucket: the store's own rules name it
    for number, line in _lines(text):
        known = len(groups)
        problem = _link(line, groups)
        if len(groups) > known:
            first_line[next(reversed(groups))] = number
        if problem is not None:
            if len(out.errors) < MAX_ERRORS:
                out.errors.append((f"line {number}", problem[0], problem[1]))
            elif len(out.errors) == MAX_ERRORS:
                out.errors.append((f"line {number}", "and more lines like these; fix the ones above first",
                                   None))
    mounts: list[dict[str, object]] = []
    for (provider, bucket), keys in groups.items():
        scheme = SCHEMES[provider]
        for key in ("url", "path"):
            out.origins[("mount", len(mounts), key)] = f"line {first_line[provider, bucket]}"
        mounts.append({"path": f"{provider}/{escape(bucket)}", "url": f"{scheme}://{escape(bucket)}",
                       "objects": [escape(k) for k in keys], "optional": True})
    if mounts:
        out.doc["mount"] = mounts
    elif not out.errors:
        out.errors.append(("(file)", "has no links", "one PROVIDER://BUCKET/OBJECT per line"))
    return out


def _link(line: str, groups: dict[tuple[str, str], dict[str, None]]) -> tuple[str, str | None] | None:
    """Adds the link to `groups`; else (message, hint)."""
    shown = line if len(line) <= 80 else line[:77] + "..."
    match = _LINK.fullmatch(line)
    if match is None:
        return f'"{shown}" is not a link', "expected PROVIDER://BUCKET/OBJECT"
    provider = match.group(1).lower()
    if provider in ("http", "https"):  # Supervisely fetches these itself, with no settings
        return (f'"{shown}" is a public web link, not a storage link',
                "Supervisely opens public links itself, as a browser would; a links file mounts "
                f"storage links, {', '.join(p + '://BUCKET/OBJECT' for p in SCHEMES)}: write the object's "
                "bucket and key, e.g. s3://BUCKET/KEY, with its credentials in -o config=")
    if provider not in SCHEMES:
        return (f'unknown provider "{provider}://" in "{shown}"',
                f"Supervisely's providers are {', '.join(p + '://' for p in SCHEMES)}")
    bucket, _, key = match.group(2).partition("/")
    if not bucket:
        return f'"{shown}" has no bucket', f"expected {provider}://BUCKET/OBJECT"
    if "@" in bucket or ":" in bucket or any(c.isspace() for c in bucket):
        return f'"{bucket}" in "{shown}" is not a bucket name', None
    if not key:
        return f'"{shown}" names a bucket, not an object', f"expected {provider}://{bucket}/OBJECT"
    try:
        check_object_key(key)
    except InvalidValue as exc:
        return exc.message, exc.hint
    groups.setdefault((provider, bucket), {})[key] = None
    return None


def bind(mounts: list[object], settings: dict[str, object]) -> list[str]:
    """Give each Azure link's mount its account, from the settings' [[azure.containers]]: the entry of
    its container, else the one account there; and check each fs:// storage id has its folder there.
    Returns the problems (one per container or storage id)."""
    azure = settings.get("azure")
    containers = azure.get("containers") if isinstance(azure, dict) else None
    entries = [e for e in containers if isinstance(e, dict)] if isinstance(containers, list) else []
    accounts = {str(e.get("account_name")) for e in entries if e.get("account_name")}
    rules = settings.get("path_substitution")
    folders = {str(rule.get("registered_prefix", "")).rstrip("/") for rule in rules
               if isinstance(rule, dict)} if isinstance(rules, list) else set()
    problems = []
    for mount in mounts:
        if isinstance(mount, dict) and str(mount.get("url", "")).startswith("fs://"):
            url = str(mount["url"])
            if url not in folders and not any("$" in f for f in folders):  # ${VAR}: checked when built
                storage = url[len("fs://"):]
                where = ("the settings map it to no folder" if settings else
                         "a links file does not say which folder it is; name the settings with -o config=")
                problems.append(
                    f'{url}: {where}: a remote_links.yml with a provider: fs entry listing storage id '
                    f'"{storage}" (path: /its/folder, buckets: [{storage}]), or a TOML config with a '
                    f'[[path_substitution]] of registered_prefix = "{url}"')
            continue
        if not isinstance(mount, dict) or not str(mount.get("url", "")).startswith("az://"):
            continue
        url = str(mount["url"])
        container = url[len("az://"):]
        if "@" in container:
            continue
        own = [e for e in entries if e.get("container_name") == container and e.get("account_name")]
        if own:
            mount["url"] = f"{url}@{own[0]['account_name']}"
        elif len(accounts) == 1:
            mount["url"] = f"{url}@{next(iter(accounts))}"
        else:
            where = ("the settings do not say its storage account" if settings else "a links file does not "
                     "say the storage account; name the settings with -o config=")
            problems.append(f"azure://{container}: {where}: a .env (STORAGE_PROVIDER=azure) or a "
                            "remote_links.yml whose provider: azure entry lists the container")
    return problems


def credentials_hint(store: str, config: Config, url: StoreUrl, entry: int | None) -> str:
    """A links file holds no credentials: the .env or remote_links.yml that has them does."""
    env = "GOOGLE_APPLICATION_CREDENTIALS" if store == "gcs" else "AWS_ACCESS_KEY_ID / AWS_PROFILE"
    return (f"name the Supervisely .env or remote_links.yml that has them: -o config=FILE; or set {env} "
            "in mountfs's environment")
