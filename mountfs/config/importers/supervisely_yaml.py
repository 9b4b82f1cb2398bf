"""Importer stub: recognises nothing yet."""

from __future__ import annotations

from mountfs.config.importers import Imported

NAME = "supervisely_yaml"


def looks_like(path: str, text: str) -> bool:
    return False


def import_text(path: str, text: str) -> Imported:
    raise NotImplementedError
