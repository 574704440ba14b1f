"""A local SMTP sink for `make run` and the tests: keeps every message, delivers none.

Each message is written to `<directory>/<UTC timestamp>-<counter>.eml` (atomically: a temporary
file renamed into place, so a reader never sees half a message) and kept in memory for tests.
`fail_next(n, code)` makes the next n messages be refused at the end of DATA, to exercise
retries (451) and permanent failures (554).

    python -m app.services.mail.sink --dir var/mail --port 8025

aiosmtpd's `Controller` runs the server in its own thread with its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from app.clock import Clock, SystemClock

DEFAULT_HOST = "127.0.0.1"
FAILURE_REPLIES = {
    421: "421 4.3.2 Service shutting down",
    451: "451 4.3.0 Try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.7.1 Message refused",
    554: "554 5.6.0 Message rejected",
}


class _Controller(Controller):
    """aiosmtpd 1.4's Controller, taught to bind port 0 and report the port the OS picked."""

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        return self._sink._receive(envelope.content)


class MailSink:
    """An SMTP server on 127.0.0.1 that stores what it receives; a context manager.

    `port=0` picks a free port; `.port` tells which once started. `directory=None` keeps the
    messages in memory only.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        clock: Clock | None = None,
        on_message: Callable[[Path | None, EmailMessage], None] | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.host = host
        self.port = port
        self._clock = clock or SystemClock()
        self._on_message = on_message
        self._controller: _Controller | None = None
        self._changed = threading.Condition()
        self._messages: list[EmailMessage] = []
        self._counter = 0
        self._failures: list[int] = []

    def start(self) -> MailSink:
        if self._controller is not None:
            raise RuntimeError("the mail sink is already running")
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        controller = _Controller(_Handler(self), hostname=self.host, port=self.port)
        controller.start()
        self._controller = controller
        self.port = int(controller.port)
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        """A snapshot of every message received so far, oldest first."""
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    def fail_next(self, count: int = 1, code: int = 451) -> None:
        """Refuse the next `count` messages at the end of DATA with `code` (4xx or 5xx)."""
        if not 400 <= code < 600:
            raise ValueError("code must be a 4xx or 5xx SMTP reply code")
        with self._changed:
            self._failures.extend([code] * count)

    def wait_for(
        self,
        predicate: Callable[[EmailMessage], bool] | None = None,
        timeout: float = 5.0,
    ) -> EmailMessage:
        """The first message (oldest first) that satisfies `predicate`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for message in self._messages:
                    if predicate is None or predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching message within {timeout} s ({len(self._messages)} received)"
                    )
                # Woken by each arrival; the short cap bounds the wait should a notify be missed.
                self._changed.wait(min(remaining, 0.1))

    def _receive(self, content: bytes) -> str:
        with self._changed:
            if self._failures:
                code = self._failures.pop(0)
                return FAILURE_REPLIES.get(code, f"{code} Refused")
            self._counter += 1
            counter = self._counter
        # SMTP speaks CRLF; Python's parser keeps it in decoded bodies, tests compare with "\n".
        message = email.message_from_bytes(
            content.replace(b"\r\n", b"\n"), _class=EmailMessage, policy=default
        )
        path = self._write(content, counter) if self.directory is not None else None
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()
        if self._on_message is not None:
            self._on_message(path, message)
        return "250 2.0.0 OK: queued"

    def _write(self, content: bytes, counter: int) -> Path:
        assert self.directory is not None
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.directory / f"{stamp}-{counter:06d}.eml"
        partial = self.directory / f".{path.name}.tmp"
        partial.write_bytes(content)
        os.replace(partial, path)
        return path


def _print_message(path: Path | None, message: EmailMessage) -> None:
    print(f"{path}  To: {message['To']}  Subject: {message['Subject']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.services.mail.sink",
        description="Local SMTP sink: keeps every message as .eml",
    )
    parser.add_argument("--dir", default="var/mail", help="where the .eml files go")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    directory = Path(args.dir).resolve()
    with MailSink(directory, host=args.host, port=args.port, on_message=_print_message) as sink:
        print(f"mail sink: smtp://{sink.host}:{sink.port}, messages in {directory}", flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
