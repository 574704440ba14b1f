"""A TCP proxy between a server under test and PostgreSQL, for fault tests.

`cut()` drops every connection and refuses new ones until `restore()` (the database goes
away). `hold_commit(*markers, reply=...)` stops one transaction at its COMMIT: the proxy reads
the PostgreSQL frontend protocol, and on the first transaction whose messages (statements,
parameters) contained every marker it either keeps the COMMIT message from PostgreSQL
(`reply=False`: the transaction never commits) or lets it through and keeps PostgreSQL's
answer from the server (`reply=True`: committed, but the server never learns it). The event
it returns is set once that point is reached; whatever is held is dropped when the server side
of the connection goes away. Several holds may be armed at once.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress

# Startup-phase request codes after which the client sends another untyped message.
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
# Simple-query messages that end a transaction (psycopg sends COMMIT this way).
_COMMIT = b"Q" + struct.pack("!I", 4 + len(b"COMMIT\x00")) + b"COMMIT\x00"
_ROLLBACK = b"Q" + struct.pack("!I", 4 + len(b"ROLLBACK\x00")) + b"ROLLBACK\x00"
# PostgreSQL's CommandComplete for a COMMIT that succeeded.
_COMMITTED = b"C" + struct.pack("!I", 4 + len(b"COMMIT\x00")) + b"COMMIT\x00"


class _Hold:
    def __init__(self, markers: tuple[bytes, ...], reply: bool) -> None:
        self.markers = frozenset(markers)
        self.reply = reply
        self.held = threading.Event()
        self.taken = False


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.markers_seen: set[bytes] = set()  # in the current transaction
        self.hold_replies: _Hold | None = None
        self.held_reply = bytearray()


class DatabaseProxy:
    """Forwards 127.0.0.1:`port` to PostgreSQL on 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self._holds: list[_Hold] = []
        threading.Thread(target=self._accept, daemon=True).start()

    # -- faults -------------------------------------------------------------------------------

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for sock in self.sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.open.set()

    def hold_commit(self, *markers: bytes, reply: bool) -> threading.Event:
        """Arm one hold (see the module's docstring); returns the event set once it holds."""
        hold = _Hold(markers, reply)
        with self.lock:
            self._holds.append(hold)
        return hold.held

    def close(self) -> None:
        self.cut()
        self.listener.close()

    # -- forwarding ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            connection = _Connection(client, upstream)
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._frontend, args=(connection,), daemon=True).start()
            threading.Thread(target=self._backend, args=(connection,), daemon=True).start()

    def _frontend(self, connection: _Connection) -> None:
        """Client to PostgreSQL, one protocol message at a time."""
        buffer = bytearray()
        startup = True
        withheld = False  # a held COMMIT: nothing more reaches PostgreSQL
        with suppress(OSError):
            while data := connection.client.recv(65536):
                buffer += data
                while message := _next_message(buffer, startup):
                    if startup:
                        code = struct.unpack("!I", message[4:8])[0]
                        startup = code in (_SSL_REQUEST, _GSSENC_REQUEST)
                    elif withheld or self._withhold(connection, message):
                        withheld = True
                        continue
                    connection.upstream.sendall(message)
        with suppress(OSError):
            connection.upstream.shutdown(socket.SHUT_RDWR)

    def _withhold(self, connection: _Connection, message: bytes) -> bool:
        """Track the connection's transaction; True for a COMMIT that must not go through."""
        if message not in (_COMMIT, _ROLLBACK):
            for hold in self._holds:
                connection.markers_seen.update(m for m in hold.markers if m in message)
            return False
        seen, connection.markers_seen = connection.markers_seen, set()
        if message != _COMMIT:
            return False
        with self.lock:
            hold = next((h for h in self._holds if not h.taken and h.markers <= seen), None)
            if hold is None:
                return False
            hold.taken = True
        if hold.reply:
            connection.hold_replies = hold  # set before PostgreSQL can answer
            return False
        hold.held.set()
        return True

    def _backend(self, connection: _Connection) -> None:
        """PostgreSQL to client, unless the answer to a held COMMIT is being kept."""
        with suppress(OSError):
            while data := connection.upstream.recv(65536):
                hold = connection.hold_replies
                if hold is None:
                    connection.client.sendall(data)
                    continue
                connection.held_reply += data
                if _COMMITTED in connection.held_reply:
                    hold.held.set()
        with suppress(OSError):
            connection.client.shutdown(socket.SHUT_RDWR)


def _next_message(buffer: bytearray, startup: bool) -> bytes | None:
    """Take one complete message off `buffer` (untyped during startup), or None."""
    header = 4 if startup else 5
    if len(buffer) < header:
        return None
    length = struct.unpack("!I", buffer[header - 4 : header])[0]
    total = length if startup else 1 + length
    if len(buffer) < total:
        return None
    message = bytes(buffer[:total])
    del buffer[:total]
    return message
