"""Positions in the raw TOML text: tomllib reports no line for a value, error messages need one."""

from __future__ import annotations

import bisect
import contextlib
import json
import re

from mountfs.config.values import SECRET_KEYS

Path = tuple[str | int, ...]
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_name(origins: dict[Path, str], path: Path) -> str:
    """The key as the user wrote it: for an imported document, the foreign file's key it came from
    (the longest part of `path` with an origin, and the rest of it as mountfs names it)."""
    for n in range(len(path), 0, -1):
        origin = origins.get(path[:n])
        if origin is not None:
            rest = dotted(path[n:])
            return origin + ("" if not rest else rest if rest.startswith("[") else "." + rest)
    return dotted(path)


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if _BARE_KEY.fullmatch(part) else json.dumps(part))
    return out


def split_key(text: str) -> tuple[str, ...]:
    """Split a (possibly dotted, possibly quoted) TOML key into its parts."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t.":
            i += 1
        elif c in "\"'":
            end = i + 1
            while end < n and text[end] != c:
                end += 2 if c == '"' and text[end] == "\\" else 1
            raw = text[i : end + 1]
            try:
                parts.append(json.loads(raw) if c == '"' else raw[1:-1])
            except ValueError:
                parts.append(raw[1:-1])
            i = end + 1
        else:
            end = i
            while end < n and text[end] not in " \t.":
                end += 1
            parts.append(text[i:end])
            i = end
    return tuple(parts)


class Locator:
    """Maps key paths to line numbers by following [table] and [[array]] headers (counting elements) and
    `key =` lines. Keys inside inline tables fall back to the line of the enclosing key or header."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._lines: dict[Path, int] = {}
        with contextlib.suppress(IndexError, ValueError):  # best effort; tomllib accepted the text
            self._scan()

    def line(self, path: Path) -> int | None:
        for n in range(len(path), 0, -1):
            line = self._lines.get(path[:n])
            if line is not None:
                return line
        return None

    def _lineno(self, pos: int) -> int:
        return bisect.bisect_right(self._line_starts, pos)

    def _record(self, path: Path, pos: int) -> None:
        line = self._lineno(pos)
        for n in range(1, len(path) + 1):
            self._lines.setdefault(path[:n], line)

    def _scan(self) -> None:
        text, n, pos = self._text, len(self._text), 0
        table: Path = ()
        arrays: dict[Path, int] = {}
        while pos < n:
            c = text[pos]
            if c in " \t\r\n":
                pos += 1
            elif c == "#":
                pos = self._end_of_line(pos)
            elif c == "[":
                is_array = text.startswith("[[", pos)
                start = pos + (2 if is_array else 1)
                end = self._find_outside_quotes(start, "]")
                parts = split_key(text[start:end])
                pos = end + (2 if is_array else 1)
                path: Path = ()
                for i, part in enumerate(parts):
                    path = (*path, part)
                    if i < len(parts) - 1 and path in arrays:
                        path = (*path, arrays[path] - 1)
                if is_array:
                    self._record(path, start)
                    index = arrays.get(path, 0)
                    arrays[path] = index + 1
                    path = (*path, index)
                self._record(path, start)
                table = path
            else:
                eq = self._find_outside_quotes(pos, "=")
                self._record(table + split_key(text[pos:eq]), pos)
                pos = self._skip_value(eq + 1)

    def _end_of_line(self, pos: int) -> int:
        end = self._text.find("\n", pos)
        return len(self._text) if end < 0 else end

    def _find_outside_quotes(self, pos: int, target: str) -> int:
        text = self._text
        while text[pos] != target:
            pos = self._skip_string(pos) if text[pos] in "\"'" else pos + 1
        return pos

    def _skip_string(self, pos: int) -> int:
        """Skip one string of any of TOML's four kinds, starting at its opening quote."""
        text = self._text
        quote = text[pos]
        if text.startswith(quote * 3, pos):
            pos += 3
            while not text.startswith(quote * 3, pos):
                pos += 2 if quote == '"' and text[pos] == "\\" else 1
            pos += 3
            while pos < len(text) and text[pos] == quote:  # up to two quotes may end the content
                pos += 1
            return pos
        pos += 1
        while text[pos] != quote:
            pos += 2 if quote == '"' and text[pos] == "\\" else 1
        return pos + 1

    def _skip_value(self, pos: int) -> int:
        """Skip a value, which may span lines (multi-line strings and arrays)."""
        text, depth = self._text, 0
        while pos < len(text):
            c = text[pos]
            if c in "\"'":
                pos = self._skip_string(pos)
            elif c == "#":
                pos = self._end_of_line(pos)
            elif c == "\n" and depth == 0:
                return pos
            else:
                depth += 1 if c in "[{" else -1 if c in "]}" else 0
                pos += 1
        return pos


def toml_error_hint(line_text: str) -> str | None:
    """Guess the usual slips behind a TOML syntax error: an unquoted size or duration, an unquoted string."""
    match = re.match(r"\s*([A-Za-z0-9_.\"'-]+)\s*=\s*([^#]*?)\s*(#.*)?$", line_text)
    if not match:
        return None
    key, value = match.group(1), match.group(2)
    if value.startswith("="):
        return f"write one = between {key} and its value"
    if not value.isprintable():
        return None  # the value cannot be shown as it is, and no quotes would make it valid
    # Never echo what follows a secret's key: the error must not carry the secret itself.
    shown = "..." if split_key(key)[-1:] and split_key(key)[-1] in SECRET_KEYS else value
    if re.fullmatch(r"[\d._]+\s*[A-Za-z]+", value):
        return f'sizes and durations are strings: write {key} = "{shown}"'
    if value.lower() in ("yes", "no", "on", "off") or value in ("True", "False"):
        return "booleans are written true or false"
    if value and value[0] not in "\"'[{+-0123456789" and value not in ("true", "false", "inf", "nan"):
        return f'strings need quotes: write {key} = "{shown}"'
    return None
