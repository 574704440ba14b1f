"""Waking this process's long-polls when a message for their device is committed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class MessageSignals:
    """Wakes this process's long-polls for a device when a message for it is committed.

    Thread-safe: messages are stored from worker threads, waiters live on the event loop.
    Other processes are not reached; their long-polls find the message on their next poll.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextlib.contextmanager
    def listen(self, device_id: str) -> Iterator[asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(device_id, set()).add(waiter)
        try:
            yield waiter[1]
        finally:
            with self._lock:
                waiters = self._waiters.get(device_id, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(device_id, None)

    def notify(self, device_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(device_id, ()))
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


# One per process, like the metrics: the signing service notifies it, the long-polls listen.
MESSAGE_SIGNALS = MessageSignals()
