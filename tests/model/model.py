"""A reference model of a mounted bucket, and the hypothesis state machine that drives a mount and
the model side by side and compares them after every step.

The model is the bucket as it must be (`keys`, directory markers ending in "/") plus at most one
file open for writing (`writer`), whose bytes the mount shows at once and the store only after close.
What the mount must show is derived from it: every non-marker key is a file, every marker and every
ancestor of a key is a directory. The rules are POSIX calls plus "another client" putting and
deleting objects in the bucket; each rule says what the model expects (an errno or success).

Semantics modelled (see mountfs/namespace/writes.py): a directory this mount empties gets a marker,
so it stays until rmdir; a directory another client empties disappears (object stores only imply
prefixes); a folder store (`folders_persist`, file://) keeps every folder, so there every directory
is a marker. Renames move every key below a directory; a file being written is renamed staged.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Protocol

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
small_data = st.binary(max_size=80)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def ancestors(path: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b"]."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@dataclass
class Writer:
    path: str | None  # None once unlinked (or replaced): its bytes go nowhere
    content: bytearray = field(default_factory=bytearray)


class Driver(Protocol):
    """One way of reaching the mount (the operations layer, or a real mount with os calls)."""

    def create(self, path: str, data: bytes) -> int: ...
    def write_at(self, path: str, offset: int, data: bytes) -> int: ...
    def truncate(self, path: str, size: int) -> int: ...
    def unlink(self, path: str) -> int: ...
    def mkdir(self, path: str) -> int: ...
    def rmdir(self, path: str) -> int: ...
    def rename(self, src: str, dst: str) -> int: ...
    def open_writer(self, path: str, create: bool) -> int: ...
    def writer_write(self, offset: int, data: bytes) -> int: ...
    def close_writer(self) -> int: ...
    def view(self) -> dict[str, bytes | None]: ...
    def store(self) -> dict[str, bytes]: ...
    def other_put(self, key: str, data: bytes) -> None: ...
    def other_delete(self, key: str) -> None: ...
    def teardown(self) -> None: ...


class Model:
    def __init__(self, folders_persist: bool) -> None:
        self.folders_persist = folders_persist
        self.keys: dict[str, bytes] = {}
        self.writer: Writer | None = None

    # --- what the mount must show ------------------------------------------------------------

    def files(self) -> dict[str, bytes]:
        files = {k: v for k, v in self.keys.items() if not k.endswith("/")}
        if self.writer is not None and self.writer.path is not None:
            files[self.writer.path] = bytes(self.writer.content)
        return files

    def dirs(self) -> set[str]:
        found = {k[:-1] for k in self.keys if k.endswith("/")}
        for path in list(found) + list(self.files()):
            found.update(ancestors(path))
        return found

    def view(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = dict.fromkeys(self.dirs())
        out.update(self.files())
        return out

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.dirs()

    def is_file(self, path: str) -> bool:
        return path in self.files()

    def exists(self, path: str) -> bool:
        return self.is_dir(path) or self.is_file(path)

    def below(self, path: str) -> list[str]:
        """Keys strictly below directory `path`."""
        return [k for k in self.keys if k.startswith(path + "/") and k != path + "/"]

    def writer_below(self, path: str) -> bool:
        w = self.writer
        return w is not None and w.path is not None and w.path.startswith(path + "/")

    def dir_empty(self, path: str) -> bool:
        return not self.below(path) and not self.writer_below(path)

    # --- changes -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.keys[key] = data
        if self.folders_persist:
            for folder in ancestors(key.rstrip("/")):
                self.keys[folder + "/"] = b""

    def keep(self, directory: str) -> None:
        """A directory this mount emptied keeps existing (a marker is put)."""
        if directory and self.dir_empty(directory):
            self.keys[directory + "/"] = b""


class MountMachine(RuleBasedStateMachine):
    """Subclasses set `driver` and `model` in __init__."""

    driver: Driver
    model: Model

    def teardown(self) -> None:
        self.driver.teardown()

    def _expect(self, got: int, expected: int, what: str) -> None:
        assert got == expected, f"{what}: errno {got} ({errno.errorcode.get(got, 'ok')}), expected " \
                                f"{expected} ({errno.errorcode.get(expected, 'ok')})"

    # --- files -------------------------------------------------------------------------------

    @rule(path=paths, data=small_data)
    def create(self, path: str, data: bytes) -> None:
        m = self.model
        if not m.is_dir(parent_of(path)) or m.exists(path) or (m.writer and m.writer.path == path):
            return
        self._expect(self.driver.create(path, data), 0, f"create {path}")
        m.put(path, data)

    @precondition(lambda self: any(p != self._writer_path() for p in self.model.files()))
    @rule(choice=st.data(), offset=st.integers(0, 100), data=small_data)
    def write_at(self, choice: st.DataObject, offset: int, data: bytes) -> None:
        m = self.model
        path = choice.draw(st.sampled_from(sorted(p for p in m.files() if p != self._writer_path())))
        content = bytearray(m.keys[path])
        if data:
            content.extend(bytes(max(0, offset - len(content))))
            content[offset:offset + len(data)] = data
        self._expect(self.driver.write_at(path, offset, data), 0, f"write {path}")
        m.put(path, bytes(content))

    @precondition(lambda self: any(p != self._writer_path() for p in self.model.files()))
    @rule(choice=st.data(), size=st.integers(0, 120))
    def truncate(self, choice: st.DataObject, size: int) -> None:
        m = self.model
        path = choice.draw(st.sampled_from(sorted(p for p in m.files() if p != self._writer_path())))
        content = m.keys[path][:size]
        self._expect(self.driver.truncate(path, size), 0, f"truncate {path}")
        m.put(path, content + bytes(size - len(content)))

    @precondition(lambda self: bool(self.model.files()))
    @rule(choice=st.data())
    def unlink(self, choice: st.DataObject) -> None:
        m = self.model
        path = choice.draw(st.sampled_from(sorted(m.files())))
        self._expect(self.driver.unlink(path), 0, f"unlink {path}")
        if m.writer is not None and m.writer.path == path:
            m.writer.path = None
        m.keys.pop(path, None)
        m.keep(parent_of(path))

    # --- one file kept open for writing ------------------------------------------------------

    def _writer_path(self) -> str | None:
        return self.model.writer.path if self.model.writer is not None else None

    @precondition(lambda self: self.model.writer is None)
    @rule(path=paths, choice=st.data())
    def open_writer(self, path: str, choice: st.DataObject) -> None:
        m = self.model
        existing = sorted(m.files())
        if existing and choice.draw(st.booleans()):
            path = choice.draw(st.sampled_from(existing))
            self._expect(self.driver.open_writer(path, False), 0, f"open {path} for writing")
            m.writer = Writer(path, bytearray(m.keys[path]))
        elif m.is_dir(parent_of(path)) and not m.exists(path):
            self._expect(self.driver.open_writer(path, True), 0, f"create {path} and keep it open")
            m.writer = Writer(path)

    @precondition(lambda self: self.model.writer is not None)
    @rule(offset=st.integers(0, 100), data=small_data)
    def writer_write(self, offset: int, data: bytes) -> None:
        w = self.model.writer
        assert w is not None
        self._expect(self.driver.writer_write(offset, data), 0, f"write to the open {w.path}")
        if data:
            w.content.extend(bytes(max(0, offset - len(w.content))))
            w.content[offset:offset + len(data)] = data

    @precondition(lambda self: self.model.writer is not None)
    @rule()
    def close_writer(self) -> None:
        m = self.model
        w = m.writer
        assert w is not None
        self._expect(self.driver.close_writer(), 0, f"close {w.path}")
        if w.path is not None:
            m.put(w.path, bytes(w.content))
        m.writer = None

    # --- directories -------------------------------------------------------------------------

    @rule(path=paths)
    def mkdir(self, path: str) -> None:
        m = self.model
        if not m.is_dir(parent_of(path)) or (m.writer and m.writer.path == path):
            return
        expected = errno.EEXIST if m.exists(path) else 0
        self._expect(self.driver.mkdir(path), expected, f"mkdir {path}")
        if not expected:
            m.put(path + "/", b"")

    @precondition(lambda self: bool(self.model.dirs()))
    @rule(choice=st.data())
    def rmdir(self, choice: st.DataObject) -> None:
        m = self.model
        path = choice.draw(st.sampled_from(sorted(m.dirs())))
        expected = 0 if m.dir_empty(path) else errno.ENOTEMPTY
        self._expect(self.driver.rmdir(path), expected, f"rmdir {path}")
        if not expected:
            m.keys.pop(path + "/", None)
            m.keep(parent_of(path))

    @precondition(lambda self: bool(self.model.files() or self.model.dirs()))
    @rule(choice=st.data(), dst=paths)
    def rename(self, choice: st.DataObject, dst: str) -> None:
        m = self.model
        src = choice.draw(st.sampled_from(sorted(set(m.files()) | m.dirs())))
        if (src == dst or not m.is_dir(parent_of(dst)) or dst.startswith(src + "/")
                or src.startswith(dst + "/")):
            return
        src_dir = m.is_dir(src)
        expected = 0
        if m.exists(dst):
            if not src_dir and m.is_dir(dst):
                expected = errno.EISDIR
            elif src_dir and not m.is_dir(dst):
                expected = errno.ENOTDIR
            elif src_dir and not m.dir_empty(dst):
                expected = errno.ENOTEMPTY
        self._expect(self.driver.rename(src, dst), expected, f"rename {src} to {dst}")
        if expected:
            return
        w = m.writer
        if not src_dir:
            if w is not None and w.path == src:
                m.keys.pop(src, None)  # the old version goes; the new name gets the data at close
                w.path = dst
            else:
                if w is not None and w.path == dst:
                    w.path = None  # replaced
                m.put(dst, m.keys.pop(src))
        else:
            moving = {k: v for k, v in m.keys.items() if k.startswith(src + "/")}
            for key in moving:
                del m.keys[key]
            for key, value in moving.items():
                m.put(dst + key[len(src):], value)
            if not moving:
                m.put(dst + "/", b"")
            if w is not None and w.path is not None and w.path.startswith(src + "/"):
                w.path = dst + w.path[len(src):]
        if parent_of(src) != parent_of(dst):
            m.keep(parent_of(src))

    # --- another client changes the bucket ---------------------------------------------------

    @rule(path=paths, data=small_data)
    def other_put(self, path: str, data: bytes) -> None:
        m = self.model
        if (m.is_dir(path) or any(m.is_file(a) for a in ancestors(path))
                or (m.writer is not None and m.writer.path == path)):
            return
        self.driver.other_put(path, data)
        m.put(path, data)

    @precondition(lambda self: bool(self.model.keys))
    @rule(choice=st.data())
    def other_delete(self, choice: st.DataObject) -> None:
        m = self.model
        candidates = [k for k in m.keys if k != self._writer_path()
                      and not (m.folders_persist and k.endswith("/") and not m.dir_empty(k[:-1]))]
        if not candidates:
            return
        key = choice.draw(st.sampled_from(sorted(candidates)))
        self.driver.other_delete(key)
        del m.keys[key]

    # --- after every step ----------------------------------------------------------------------

    @invariant()
    def the_mount_shows_the_model(self) -> None:
        expected = self.model.view()
        shown = self.driver.view()
        assert shown == expected, _diff(shown, expected)

    @invariant()
    def the_store_holds_the_model(self) -> None:
        stored = self.driver.store()
        assert stored == self.model.keys, _diff(stored, self.model.keys)  # type: ignore[arg-type]


def _diff(got: dict[str, bytes | None], expected: dict[str, bytes | None]) -> str:
    lines = []
    for key in sorted(set(got) | set(expected)):
        if got.get(key, b"<missing>") != expected.get(key, b"<missing>"):
            lines.append(f"  {key!r}: got {got.get(key, '<missing>')!r}, "
                         f"expected {expected.get(key, '<missing>')!r}")
    return "differences:\n" + "\n".join(lines)
