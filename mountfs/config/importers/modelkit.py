"""Importer stub for modelkit's environment variables."""

from __future__ import annotations

from mountfs.config.importers import Imported

NAME = "modelkit"


def import_environment(env: dict[str, str]) -> Imported:
    raise NotImplementedError
