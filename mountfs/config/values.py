"""Scalar values of a config: sizes, durations, free space, and the rules numbers are held to."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from fractions import Fraction

from mountfs.config.model import DAY, HOUR, MINUTE, WEEK, GiB, KiB, MiB, MinFree, PiB, TiB
from mountfs.errors import without_credentials


class InvalidValue(ValueError):
    """A ValueError whose hint is kept apart, so a ConfigError can show it in its own hint slot."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": KiB, "kib": KiB, "kb": 1000,
    "m": MiB, "mib": MiB, "mb": 1000**2,
    "g": GiB, "gib": GiB, "gb": 1000**3,
    "t": TiB, "tib": TiB, "tb": 1000**4,
    "p": PiB, "pib": PiB, "pb": 1000**5,
}  # fmt: skip
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_size(text: str | int) -> int:
    """People write sizes as "4MiB" or "1.5GB"; a bare "4M" means MiB as in rclone. Rounded to bytes."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise InvalidValue(f'invalid size {text!r}: expected a string such as "4MiB" or a number of bytes')
    if isinstance(text, int):
        if text < 0:
            raise InvalidValue(f"invalid size {text}: must not be negative")
        return text
    if text.strip().startswith("-"):
        raise InvalidValue(f'invalid size "{text}": must not be negative')
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise InvalidValue(
            f'invalid size "{text}": expected a number with an optional unit, '
            'e.g. "4MiB", "200GiB", "1.5GB" or "512"'
        )
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise InvalidValue(
            f'invalid size "{text}": unknown unit "{unit}"',
            "use B, KiB, MiB, GiB, TiB, PiB or KB, MB, GB, TB, PB",
        )
    return round(Fraction(number) * multiplier)


def format_size(n: int) -> str:
    """The shortest exact binary form ("4MiB"), so a message shows the value the way the user wrote it."""
    for unit, size in (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


_PERCENT_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")


def parse_min_free(text: str | int) -> MinFree:
    """A size ("10GiB", or bytes) or a percentage of the disk ("5%", below 100)."""
    if isinstance(text, str) and "%" in text:
        match = _PERCENT_RE.fullmatch(text)
        if not match:
            raise InvalidValue(
                f'invalid free space "{text}": expected a size such as "10GiB" or a percentage such as "5%"'
            )
        percent = float(match.group(1))
        if percent >= 100:
            raise InvalidValue(f'invalid free space "{text}": a percentage must be below 100%')
        return MinFree(percent=percent)
    return MinFree(size=parse_size(text))


_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")
_DURATIONS_RE = re.compile(r"(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*[A-Za-z]+)+\s*")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)")


def parse_duration(text: str | int | float) -> float:
    """Seconds from "500ms", "90s", "5m", "2h", "7d", "1w" or "1h30m"; a bare number is seconds."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise InvalidValue(
            f'invalid duration {text!r}: expected a string such as "90s" or a number of seconds'
        )
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise InvalidValue(f"invalid duration {text}: must be a finite number of seconds, not negative")
        return float(text)
    if text.strip().startswith("-"):
        raise InvalidValue(f'invalid duration "{text}": must not be negative')
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    if not _DURATIONS_RE.fullmatch(text):
        raise InvalidValue(
            f'invalid duration "{text}": expected a number with a unit, e.g. "500ms", "90s", "5m", "2h", "7d"'
        )
    total = 0.0
    for number, unit in _DURATION_PART_RE.findall(text):
        seconds = _DURATION_UNITS.get(unit.lower())
        if seconds is None:
            raise InvalidValue(f'invalid duration "{text}": unknown unit "{unit}"', "use ms, s, m, h, d or w")
        total += float(number) * seconds
    return total


def closest(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    """difflib's ratio, ties broken towards a shared first letter ("s4" is nearer "s3" than "gs")."""
    best, best_score = None, cutoff
    for choice in choices:
        score = difflib.SequenceMatcher(None, word, choice).ratio()
        score += 0.01 if choice[:1] == word[:1] else 0.0
        if score >= best_score:
            best, best_score = choice, score
    return best


SECRET_KEYS = frozenset(
    {"key", "secret", "token", "account_key", "connection_string", "sas_token", "credentials_json",
     "client_secret"}
)


def describe(value: object, secret: bool = False) -> str:
    if isinstance(value, bool):
        return "a boolean" if secret else f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return "an integer" if secret else f"integer {value}"
    if isinstance(value, float):
        return "a float" if secret else f"float {value}"
    if isinstance(value, str):
        if secret:
            return "a string"
        value = without_credentials(value)  # before cutting it short, which could cut off the "@"
        return f"string {json.dumps(value if len(value) <= 40 else value[:37] + '...')}"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "an array of tables"
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def at_least_one(v: int) -> str | None:
    return None if v >= 1 else f"must be at least 1, got {v}"


MAX_CONNECTIONS = 4096
"""More connections or threads than any store serves one client: a larger number is a typo, and would
have the connection pool or thread pool set up for it never finish."""


def connections(v: int) -> str | None:
    """A count of connections or threads: at least 1, at most MAX_CONNECTIONS."""
    if v > MAX_CONNECTIONS:
        return f"must be at most {MAX_CONNECTIONS}, got {v}"
    return at_least_one(v)


def block_size_problem(v: int) -> str | None:
    """What is wrong with a block size (the config key and `-o block_size=` share this rule)."""
    if 64 * KiB <= v <= 64 * MiB and v & (v - 1) == 0:
        return None
    return f"must be a power of two from 64KiB to 64MiB, got {format_size(v)}"


def part_size_problem(v: int) -> str | None:
    if 5 * MiB <= v <= 5 * GiB:
        return None
    return f"must be from 5MiB to 5GiB (the S3 multipart limits), got {format_size(v)}"
