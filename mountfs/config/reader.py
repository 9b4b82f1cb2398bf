"""Walks a parsed document once, recording every problem with its file, line and dotted key, and carrying
on with defaults, so one `config check` shows everything to fix."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

from mountfs.config.model import StoreUrl
from mountfs.config.toml_text import Locator, Path, dotted, key_name
from mountfs.config.urls import parse_url
from mountfs.config.values import (
    SECRET_KEYS,
    InvalidValue,
    at_least_one,
    closest,
    describe,
    parse_duration,
    parse_size,
    positive,
)
from mountfs.errors import ConfigError

Table = dict[str, object]
_T = TypeVar("_T")
Check = Callable[[_T], str | None]


class _Absent:
    """Marks a key that is missing, or whose value was already reported (so it is not reported twice)."""


ABSENT = _Absent()
REPORTED = _Absent()
_ENV_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Reader:
    """Walks the parsed document once, recording every problem and carrying on with defaults."""

    def __init__(self, file: str, text: str, origins: dict[Path, str] | None = None) -> None:
        self.file = file
        self.locator = Locator(text)
        self.origins = origins or {}
        self.errors: list[ConfigError] = []

    # -- reporting

    def error(self, path: Path, message: str, hint: str | None = None, at: Path | None = None) -> None:
        """`at` points the line elsewhere, e.g. at the key that makes a missing one required."""
        line = self.locator.line(path if at is None else at)
        key = self.key_name(path)
        self.errors.append(ConfigError(message, file=self.file, line=line, key=key, hint=hint))

    def key_name(self, path: Path) -> str | None:
        """The key as the user wrote it: for an imported document, the foreign file's key it came from."""
        return key_name(self.origins, path) or None

    def value_error(self, path: Path, exc: ValueError) -> None:
        if isinstance(exc, InvalidValue):
            self.error(path, exc.message, exc.hint)
        else:
            self.error(path, str(exc))

    def type_error(self, path: Path, expected: str, value: object, hint: str | None = None) -> None:
        secret = bool(path) and path[-1] in SECRET_KEYS
        self.error(path, f"expected {expected}, got {describe(value, secret)}", hint)

    # -- ${VAR} references

    def expand(self, value: object, path: Path) -> object:
        if isinstance(value, dict):
            return {k: self.expand(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            return self.expand_string(value, path)
        return value

    def expand_string(self, value: str, path: Path) -> object:
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            text = match.group(0)
            if text == "$${":
                return "${"
            if match.group(1) is None:
                failed = True
                self.error(path, 'unclosed "${"', "write $${ for a literal ${")
                return text
            name, sep, default = match.group(1).partition(":-")
            if not _ENV_NAME.fullmatch(name):
                failed = True
                self.error(path, f'malformed reference "{text}"', "write ${NAME} or ${NAME:-default}")
                return text
            current = os.environ.get(name)
            if sep and not current:
                return default
            if current is None:
                failed = True
                self.error(
                    path,
                    f"environment variable {name} is not set",
                    f"set it, or give a default: ${{{name}:-...}}",
                )
                return text
            return current

        result = _ENV_RE.sub(replace, value)
        return REPORTED if failed else result

    # -- tables

    def table(self, value: object, path: Path, allowed: Sequence[str], header: str) -> Table:
        if not isinstance(value, dict):
            hint = f"write [{header}] with single brackets" if isinstance(value, list) else None
            self.type_error(path, f"a table [{header}]", value, hint)
            return {}
        for key, item in value.items():
            if key not in allowed:
                is_table = isinstance(item, dict) or (
                    isinstance(item, list) and bool(item) and all(isinstance(v, dict) for v in item)
                )
                near = closest(key, allowed)
                self.error(
                    (*path, key),
                    f"unknown {'table' if is_table else 'key'}",
                    f'did you mean "{near}"?' if near else None,
                )
        return value

    def tables(
        self, value: object, path: Path, allowed: Sequence[str], header: str
    ) -> list[tuple[Path, Table]]:
        if value is ABSENT or value is REPORTED:
            return []
        if not isinstance(value, list):
            hint = f"write [[{header}]] with double brackets" if isinstance(value, dict) else None
            self.type_error(path, f"an array of tables [[{header}]]", value, hint)
            return []
        out = []
        for i, item in enumerate(value):
            if item is REPORTED:
                continue
            out.append(((*path, i), self.table(item, (*path, i), allowed, header)))
        return out

    def sub(self, tbl: Table, path: Path, key: str, allowed: Sequence[str]) -> tuple[Path, Table]:
        sub_path = (*path, key)
        value = tbl.get(key, ABSENT)
        if value is ABSENT or value is REPORTED:
            return sub_path, {}
        return sub_path, self.table(value, sub_path, allowed, dotted(sub_path))

    # -- scalar values

    def raw(
        self, tbl: Table, path: Path, key: str, required: bool = False, hint: str | None = None
    ) -> object:
        value = tbl.get(key, ABSENT)
        if value is REPORTED:
            return ABSENT
        if value is ABSENT and required:
            self.error((*path, key), "required key is missing", hint)
        return value

    def str_(
        self,
        tbl: Table,
        path: Path,
        key: str,
        *,
        required: bool = False,
        hint: str | None = None,
        allow_empty: bool = False,
    ) -> str | None:
        """Optional strings that come out empty (e.g. "${TOKEN:-}") count as not set."""
        value = self.raw(tbl, path, key, required, hint)
        if value is ABSENT:
            return None
        if not isinstance(value, str):
            self.type_error((*path, key), "a string", value)
            return None
        if value == "" and not allow_empty:
            if required:
                self.error((*path, key), "must not be empty", hint)
            return None
        return value

    def checked_str(
        self,
        tbl: Table,
        path: Path,
        key: str,
        check: Callable[[str], object],
        *,
        required: bool = False,
        hint: str | None = None,
    ) -> str | None:
        value = self.str_(tbl, path, key, required=required, hint=hint)
        if value is None:
            return None
        try:
            check(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return None
        return value

    def url(self, tbl: Table, path: Path, key: str, hint: str | None = None) -> StoreUrl | None:
        value = self.str_(tbl, path, key, required=True, hint=hint)
        if value is None:
            return None
        try:
            return parse_url(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return None

    def bool_(self, tbl: Table, path: Path, key: str, default: bool) -> bool:
        value = self.raw(tbl, path, key)
        if value is ABSENT:
            return default
        if isinstance(value, bool):
            return value
        hint = "remove the quotes" if isinstance(value, str) and value in ("true", "false") else None
        self.type_error((*path, key), "a boolean (true or false)", value, hint)
        return default

    def int_(self, tbl: Table, path: Path, key: str, default: int, check: Check[int] = at_least_one) -> int:
        value = self.raw(tbl, path, key)
        if value is ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            hint = "remove the quotes" if isinstance(value, str) and value.strip().isdigit() else None
            self.type_error((*path, key), "an integer", value, hint)
            return default
        return self.check((*path, key), value, default, check)

    def size(self, tbl: Table, path: Path, key: str, default: int, check: Check[int] = positive) -> int:
        value = self.raw(tbl, path, key)
        if value is ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.type_error((*path, key), 'a size such as "4MiB" or a number of bytes', value)
            return default
        try:
            parsed = parse_size(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return default
        return self.check((*path, key), parsed, default, check)

    def duration(
        self, tbl: Table, path: Path, key: str, default: float, check: Check[float] | None = None
    ) -> float:
        value = self.raw(tbl, path, key)
        if value is ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.type_error((*path, key), 'a duration such as "90s" or a number of seconds', value)
            return default
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            self.value_error((*path, key), exc)
            return default
        return parsed if check is None else self.check((*path, key), parsed, default, check)

    def check(self, path: Path, value: _T, default: _T, check: Check[_T]) -> _T:
        problem = check(value)
        if problem is None:
            return value
        self.error(path, problem)
        return default

    def key_pair(
        self, tbl: Table, path: Path, key: str | None, secret: str | None, token: str | None
    ) -> None:
        """A key without its secret (or the reverse) is always a mistake; say so here, not at first upload."""

        def reported(name: str) -> bool:
            value = tbl.get(name)
            return value is REPORTED or not isinstance(value, str | None)

        if key is not None and ("/" in key or not key.isprintable()):
            # SigV4 splits its Credential field at "/"; a store only answers "400 Bad Request" otherwise
            self.error((*path, "key"), 'must not contain "/" or control characters (it is an access key ID)')
        for name, value in (("secret", secret), ("token", token)):
            if value is not None and any(unicodedata.category(c) == "Cc" for c in value):
                self.error((*path, name), "must not contain control characters")
        if key is not None and secret is None and not reported("secret"):
            self.error((*path, "secret"), "required when key is set", at=(*path, "key"))
        if secret is not None and key is None and not reported("key"):
            self.error((*path, "key"), "required when secret is set", at=(*path, "secret"))
        if token is not None and key is None and secret is None and not reported("key"):
            self.error((*path, "token"), "needs key and secret as well")
