"""Configs of other systems, read as they are: each importer turns one foreign format into a document of
mountfs's own TOML shape, which the same reader then checks, so an imported setting is held to exactly
the rules of a written one and `mountfs config import` can print it.

An importer module has `NAME`, `looks_like(path, text) -> bool`, `import_text(path, text) -> Imported` and
`credentials_hint(store, config, url, entry) -> str` (what to set, in its own keys, when a store finds no
credentials).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from mountfs.config.toml_text import Path

if TYPE_CHECKING:
    from mountfs.config.model import Config, StoreUrl

IMPORTERS = ("clearml", "supervisely_env", "supervisely_yaml", "supervisely_links")
"""Module names under this package, asked in this order whether a file that is not TOML is theirs."""


@dataclass(frozen=True)
class Note:
    """A setting of the foreign file with no equivalent: `config import` prints it as a comment beside
    the section `near` (a TOML section name, "" for the top), mounting logs it at info level."""

    key: str
    message: str
    near: str = ""


@dataclass
class Imported:
    """`doc` is a document in mountfs's TOML shape (as `tomllib.loads` would return it). `origins` maps a
    key path of `doc` to the dotted key of the foreign file it came from, so an error names the key the
    user wrote. `errors` are problems only the importer can see (a key with no meaning, a value refused)."""

    format: str
    doc: dict[str, object]
    notes: list[Note] = field(default_factory=list)
    origins: dict[Path, str] = field(default_factory=dict)
    errors: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(foreign key, message, hint)."""


def importer(name: str) -> ModuleType:
    return importlib.import_module(f"mountfs.config.importers.{name}")


def detect(path: str, text: str) -> ModuleType | None:
    """The importer whose format `text` is in, or None (then it is meant as TOML)."""
    for name in IMPORTERS:
        module = importer(name)
        if module.looks_like(path, text):
            return module
    return None


def credentials_hint(store: str, config: Config, url: StoreUrl, entry: int | None, own: str) -> str:
    """What to set when `store` ("s3", "gcs") finds no credentials for `url`, in the keys of the file the
    settings came from (`entry`: the index of the store's credentials entry used, if any); `own`, the
    hint in mountfs's TOML keys, for settings written in TOML."""
    if config.settings_format is None:
        return own
    for name in (*IMPORTERS, "modelkit"):
        module = importer(name)
        if getattr(module, "FORMAT", module.NAME) == config.settings_format:
            hint: str = module.credentials_hint(store, config, url, entry)
            return hint
    return own
