"""Importer stub: recognises nothing yet."""

from __future__ import annotations

from mountfs.config.importers import Imported

NAME = "clearml"


def looks_like(path: str, text: str) -> bool:
    return False


def import_text(path: str, text: str) -> Imported:
    raise NotImplementedError


def default_path() -> str:
    """The clearml.conf ClearML itself would read."""
    raise NotImplementedError
