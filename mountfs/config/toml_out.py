"""An imported document written back as mountfs TOML, with each setting that has no equivalent as a
comment beside its section, for `mountfs config import`. tomlkit keeps comments and [[array]] tables."""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.items import AoT, Table

from mountfs.config.importers import Imported, Note


def to_toml(imported: Imported, source: str) -> str:
    document = tomlkit.document()
    document.add(tomlkit.comment(f"mountfs config imported from {source} ({imported.format})"))
    document.add(tomlkit.nl())
    notes_by_section: dict[str, list[Note]] = {}
    for note in imported.notes:
        notes_by_section.setdefault(note.near.split(".")[0] if note.near else "", []).append(note)
    for note in notes_by_section.pop("", []):
        document.add(tomlkit.comment(_note_text(note)))
    for key, value in imported.doc.items():
        item = _item(value)
        for note in notes_by_section.pop(key, []):
            if isinstance(item, Table):
                item.add(tomlkit.comment(_note_text(note)))
            else:
                document.add(tomlkit.comment(_note_text(note)))
        document.add(key, item)
    for notes in notes_by_section.values():  # notes for sections the document does not have
        for note in notes:
            document.add(tomlkit.comment(_note_text(note)))
    return tomlkit.dumps(document)


def _note_text(note: Note) -> str:
    return f"{note.key}: {note.message}"


def _item(value: Any) -> Any:
    if isinstance(value, dict):
        table = tomlkit.table()
        for k, v in value.items():
            table.add(k, _item(v))
        return table
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        aot: AoT = tomlkit.aot()
        for v in value:
            aot.append(_item(v))
        return aot
    return value
