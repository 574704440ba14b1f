"""Sending one message over SMTP, and what the delivery worker makes of a refusal.

`SmtpTransport` keeps one connection open across messages and reopens it when it drops; a
`DeliveryError` says whether sending again can help (`TransientDeliveryError`) or not
(`PermanentDeliveryError`). Its text is safe to store and log.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from typing import Protocol

from app.settings import Settings

_ERROR_TEXT_LIMIT = 300


class DeliveryError(Exception):
    """The SMTP server did not take the message; the text is safe to store and log."""


class TransientDeliveryError(DeliveryError):
    """Try again later: no connection, a timeout, a 4xx reply, a refused login."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply to this message: sending it again would get the same answer."""


class Transport(Protocol):
    def send(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class _StaleConnection(Exception):
    """A reused connection turned out closed before this message's first command."""


class SmtpTransport:
    """Sends over one SMTP connection, kept open across messages and reopened when it drops.

    Blocking (smtplib) and not thread-safe: one per worker thread. Configured by the `smtp_*`
    settings: host, port, STARTTLS or implicit TLS (certificate verified), login, timeout. A
    refused login or a failed TLS handshake is a configuration problem, not the message's, so it
    is transient (the message waits for a fix).
    """

    def __init__(self, settings: Settings) -> None:
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._timeout = settings.smtp_timeout_seconds
        self._starttls = settings.smtp_starttls
        self._implicit_tls = settings.smtp_tls
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._smtp: smtplib.SMTP | None = None

    def send(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        """Send `message` (RFC 5322 bytes with CRLF line ends) or raise a `DeliveryError`.

        All recipients or none: one refused recipient resets the transaction before DATA.
        """
        if not to_addrs:
            raise PermanentDeliveryError("no recipients")
        try:
            self._send_once(message, from_addr, to_addrs)
        except _StaleConnection:
            # The server had closed the idle connection; nothing of this message was sent.
            self._send_once(message, from_addr, to_addrs)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _send_once(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        reused = self._smtp is not None
        smtp = self._connection()
        try:
            code, reply = smtp.mail(from_addr)
        except (smtplib.SMTPException, OSError, UnicodeError) as exc:
            self._drop()
            if reused and isinstance(exc, OSError):
                raise _StaleConnection from exc
            raise _classify(exc) from exc
        if code == 421 and reused:
            self._drop()
            raise _StaleConnection
        try:
            if code != 250:
                self._reject(smtp, code, reply)
            for address in to_addrs:
                code, reply = smtp.rcpt(address)
                if code not in (250, 251):
                    self._reject(smtp, code, reply)
            code, reply = smtp.data(message)
            if code != 250:
                self._reject(smtp, code, reply)
        except DeliveryError:
            raise
        except smtplib.SMTPResponseException as exc:
            # DATA itself refused (no 354).
            self._reject(smtp, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError, UnicodeError) as exc:
            self._drop()
            raise _classify(exc) from exc

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        try:
            # Host given to the constructor: TLS checks the certificate against it (SNI too).
            smtp = (
                smtplib.SMTP_SSL(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
                if self._implicit_tls
                else smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            )
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(
                _truncate(
                    f"cannot open SMTP session to {self._host}:{self._port}: {_describe(exc)}"
                )
            ) from exc
        try:
            smtp.ehlo()
            if self._starttls and not self._implicit_tls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self._username is not None:
                password = self._password.get_secret_value() if self._password else ""
                smtp.login(self._username, password)
        except (smtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise TransientDeliveryError(
                _truncate(
                    f"cannot open SMTP session to {self._host}:{self._port}: {_describe(exc)}"
                )
            ) from exc
        self._smtp = smtp
        return smtp

    def _reject(self, smtp: smtplib.SMTP, code: int, reply: bytes | str) -> None:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        if code == 421:
            self._drop()
        else:
            try:
                smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        detail = _truncate(f"SMTP {code} {text}")
        if 500 <= code < 600:
            raise PermanentDeliveryError(detail)
        raise TransientDeliveryError(detail)

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def error_text(exc: BaseException) -> str:
    """What went wrong, short enough to store as a message's `last_error`."""
    return _truncate(_describe(exc))


def _classify(exc: BaseException) -> DeliveryError:
    if isinstance(exc, UnicodeError):
        return PermanentDeliveryError("an address is not ASCII and SMTPUTF8 is not used")
    return TransientDeliveryError(error_text(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _truncate(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 1] + "…"
