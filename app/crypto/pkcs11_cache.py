"""The unwrapped people's keys one process keeps in the token, a bounded LRU by key id."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class UnwrappedKeys:
    """At most `size` unwrapped keys (session-object handles), least recently used out first.

    It never touches the token: every method returns the handles it let go of, and the
    caller destroys them there. An entry remembers its blob, so a key renewed under the same
    id is never answered with the old key.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[bytes, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_id: str, blob: bytes) -> tuple[Any | None, list[Any]]:
        """The cached handle for this blob (or None), and the handles to destroy."""
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None:
                return None, []
            if entry[0] == blob:
                self._entries.move_to_end(key_id)
                return entry[1], []
            del self._entries[key_id]
            return None, [entry[1]]

    def put(self, key_id: str, blob: bytes, handle: Any) -> list[Any]:
        """Keep `handle`; returns what to destroy (`handle` itself when it is not kept)."""
        with self._lock:
            if self._size == 0 or key_id in self._entries:
                return [handle]  # no cache, or another thread cached this key meanwhile
            self._entries[key_id] = (blob, handle)
            evicted = []
            while len(self._entries) > self._size:
                evicted.append(self._entries.popitem(last=False)[1][1])
            return evicted

    def peek(self, key_id: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key_id)
        return None if entry is None else entry[1]

    def pop(self, key_id: str) -> Any | None:
        with self._lock:
            entry = self._entries.pop(key_id, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        """Forget every handle without destroying: for when the token's sessions are gone."""
        with self._lock:
            self._entries.clear()
