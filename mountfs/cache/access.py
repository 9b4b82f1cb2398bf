"""How each object is read, remembered across its handles.

A handle's own reads tell a stream from random access only after a few of them; a new handle of a
file another handle just read at random (a parquet reader opens it again for each column, `unzip`
after listing) would otherwise start as a stream from offset 0 and fetch whole blocks ahead.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mountfs.backends.base import ObjectId

REMEMBERED = 4096  # objects whose access is remembered, the most recently read


@dataclass
class ObjectAccess:
    """What the handles of one object version have shown."""

    random: int = 0  # reads that jumped, or read a footer
    streams: int = 0  # handles whose reads turned sequential

    @property
    def read_at_random(self) -> bool:
        return self.random > 0 and self.random > self.streams


class AccessMemory:
    """ObjectAccess by object version, the least recently read forgotten first."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._objects: OrderedDict[ObjectId, ObjectAccess] = OrderedDict()

    def of(self, obj: ObjectId) -> ObjectAccess:
        access = self._objects.get(obj)
        if access is None:
            access = self._objects[obj] = ObjectAccess()
            if len(self._objects) > self.size:
                self._objects.popitem(last=False)
        else:
            self._objects.move_to_end(obj)
        return access
