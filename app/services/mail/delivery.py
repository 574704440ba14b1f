"""The delivery worker: sends what the outbox holds, once, and never after its deadline.

Blocking by design: `SmtpTransport` is smtplib and `DeliveryWorker` uses the synchronous
SQLAlchemy session, so one batch is plain sequential code; the application's event loop runs it
with `asyncio.to_thread` (`run_delivery_loop`), and `python -m app jobs run` can call
`deliver_due` directly.

Guarantees, in order of importance:

- Nothing goes out after a message's `not_after` (checked by SQL and again against the clock just
  before each send); an expired message is wiped.
- A message the SMTP server accepted is not sent again: the `sent` status is committed soon
  after the server's 250, long before the lease runs out. The messages one pass sends (at most
  a handful: the courier's batch and one claim) are marked sent together, in one transaction
  with their audit events, at the end of the pass or before anything else the pass writes;
  under load that spares a transaction per message.
- Several worker processes share one PostgreSQL safely: a claim is `SELECT ... FOR UPDATE SKIP
  LOCKED` in a short committed transaction, then a time-limited lease. SQLite has one process
  (its `BEGIN IMMEDIATE` serialises claims anyway). A message queued in a process whose loops
  run needs no claim: the transaction that queues it takes the lease, and the claim is handed
  to a loop in memory (`app.services.mail.courier`).
- Sent, failed and expired messages are wiped (`sealed_message = NULL`).

The remaining window: if the process dies (or the database is lost) between the server's 250 and
our commit, the message (and the others its pass sent before it) stays `sending`; when its lease
runs out another pass claims and sends it again. (Likewise if the connection breaks after the
message's final dot but before the server's reply: we cannot know whether it was taken, so it
is retried.) Delivery is therefore at-least-once in that window, and the copy carries the same
`Message-ID` so the recipient's MTA or mail client can drop the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import smtplib
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.policy import SMTP
from email.utils import parseaddr
from typing import Any, Protocol

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.crypto.sealing import SealBroken, open_sealed
from app.db import status_constant
from app.errors import ConfigurationError
from app.metrics import MAILS_DELIVERED
from app.models.outbox import OutboxMessage, OutboxStatus
from app.services.audit.log import AuditLog
from app.services.mail.courier import DEFAULT_LEASE_SECONDS, Claim, Courier, Nudge
from app.services.mail.outbox import associated_data
from app.settings import Settings

logger = logging.getLogger("roamsign.delivery")

MAX_BACKOFF_SECONDS = 300.0
BACKOFF_JITTER = 0.2  # up to +20 %, so retries of one outage do not arrive in lockstep
# Messages claimed by one pass of one loop: small, so that several loops (one SMTP connection
# each) share a burst instead of one of them taking it all and sending it in sequence.
CLAIM_BATCH = 4
EXPIRY_SWEEP_INTERVAL = timedelta(seconds=1)
_MESSAGES: Table = OutboxMessage.__table__  # type: ignore[assignment]
_ERROR_TEXT_LIMIT = 300
# Built once and run on the session's connection: every message sent runs it, and building the
# statement and taking it through the ORM's execution cost more than the database's work.
_MARK_SENT = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"))
    .values(
        status=OutboxStatus.SENT,
        sent_at=bindparam("sent_at"),
        sealed_message=None,
        lease_until=None,
        last_error=None,
    )
)


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
    settings: host, port, STARTTLS, login, timeout. A refused login or a failed STARTTLS is a
    configuration problem, not the message's, so it is transient (the message waits for a fix).
    """

    def __init__(self, settings: Settings) -> None:
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._timeout = settings.smtp_timeout_seconds
        self._starttls = settings.smtp_starttls
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
        smtp = smtplib.SMTP(timeout=self._timeout)
        try:
            smtp.connect(self._host, self._port)
            smtp.ehlo()
            if self._starttls:
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


def _classify(exc: BaseException) -> DeliveryError:
    if isinstance(exc, UnicodeError):
        return PermanentDeliveryError("an address is not ASCII and SMTPUTF8 is not used")
    return TransientDeliveryError(_truncate(_describe(exc)))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _truncate(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[: _ERROR_TEXT_LIMIT - 1] + "…"


@dataclass(frozen=True)
class _Sent:
    """A message the SMTP server took, whose `sent` mark is not committed yet."""

    claim: Claim
    sent_at: datetime


@dataclass(frozen=True)
class DeliveryReport:
    """What one `deliver_due` pass did. `claimed`: from the database; `handed`: by the courier;
    `released`: claimed but handed back unsent (lease low)."""

    sent: int = 0
    retried: int = 0
    expired: int = 0
    failed: int = 0
    released: int = 0
    claimed: int = 0
    handed: int = 0


class DeliveryWorker:
    """Sends due outbox messages; run it from `run_delivery_loop` or `python -m app jobs run`.

    Not thread-safe (it owns one SMTP connection): give each thread its own worker and transport.
    `lease_seconds` bounds how long a claim is ours; a message is sent only while at least
    twice the SMTP timeout of the lease is left, otherwise it is handed back unsent.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        seal_key: bytes,
        transport: Transport,
        clock: Clock,
        settings: Settings,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        audit: Callable[[Session], AuditLog] | None = None,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._seal_key = seal_key
        self._transport = transport
        self._clock = clock
        self._max_attempts = settings.delivery_max_attempts
        self._backoff_base = settings.delivery_backoff_base_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._send_budget = timedelta(seconds=2 * settings.smtp_timeout_seconds)
        self._next_sweep: datetime | None = None
        # Sent in this pass: the marks not committed yet, and the ids (to release none of them).
        self._unrecorded: list[_Sent] = []
        self._sent_this_pass: set[str] = set()
        if self._send_budget >= self._lease:
            raise ConfigurationError("the delivery lease must exceed twice the SMTP timeout")
        self._envelope_from = parseaddr(settings.mail_from)[1]
        if "@" not in self._envelope_from:
            raise ConfigurationError("ROAMSIGN_MAIL_FROM has no e-mail address")
        # The sealed messages have no From: it is the deployment's, added at send time.
        self._from_header = SMTP.fold_binary(
            "From", SMTP.header_factory("From", settings.mail_from)
        )

    def deliver_due(
        self, limit: int = 100, handed: Sequence[Claim] = (), *, claim_database: bool = True
    ) -> DeliveryReport:
        """One pass: send the claims the courier `handed` over, then (unless not
        `claim_database`) expire what is overdue (at most once a second), claim up to `limit`
        due messages from the database and send them."""
        now = self._clock.now()
        expired = failed = 0
        claims: list[Claim] = []
        if claim_database:
            # The sweep only wipes what can no longer be sent (claims skip it and sending checks
            # again), so once a second is enough; under load passes follow each other closely.
            if self._next_sweep is None or now >= self._next_sweep:
                expired = self._expire_overdue(now)
                self._next_sweep = now + EXPIRY_SWEEP_INTERVAL
            claims, failed = self._claim(now, limit)
        counts = {"sent": 0, "retried": 0, "expired": expired, "failed": failed, "released": 0}
        self._sent_this_pass.clear()
        for claim in (*handed, *claims):
            counts[self._deliver(claim)] += 1
        self._record_sent()
        if not claims and not handed:
            # Idle: do not hold a connection to the relay open between quiet polls.
            self._transport.close()
        return DeliveryReport(claimed=len(claims), handed=len(handed), **counts)

    def release(self, claims: Sequence[Claim]) -> None:
        """Hand claims back unsent (pending again, the attempt not counted), so that a loop of
        any process claims them now rather than when their lease runs out. Those the last pass
        sent are not handed back (after a failed pass, its loop releases all it was handed)."""
        self._record_sent()
        now = self._clock.now()
        for claim in claims:
            if claim.id in self._sent_this_pass:
                continue
            self._settle(
                claim,
                status=OutboxStatus.PENDING,
                lease_until=None,
                next_attempt_at=now,
                attempts=claim.attempts - 1,
            )

    def close(self) -> None:
        try:
            self._record_sent()
        except Exception:
            # The database is gone: these stay `sending` and go again once their leases run out
            # (the at-least-once window above). Closing must still close.
            logger.exception("outbox.delivery.unrecorded", extra={"sent": len(self._unrecorded)})
        finally:
            self._transport.close()

    def _expire_overdue(self, now: datetime) -> int:
        with self._sessions.begin() as session:
            expired = session.scalars(
                update(_MESSAGES)
                .where(
                    _MESSAGES.c.not_after <= now,
                    or_(
                        _MESSAGES.c.status == status_constant(OutboxStatus.PENDING),
                        and_(
                            _MESSAGES.c.status == status_constant(OutboxStatus.SENDING),
                            _MESSAGES.c.lease_until <= now,
                        ),
                    ),
                )
                .values(status=OutboxStatus.EXPIRED, sealed_message=None, lease_until=None)
                .returning(_MESSAGES.c.id)
            ).all()
        for message_id in expired:
            logger.info("outbox.message.expired", extra={"outbox_id": message_id})
        return len(expired)

    def _claim(self, now: datetime, limit: int) -> tuple[list[Claim], int]:
        """Take due messages in a short committed transaction; returns (claims, failed).

        Core statements: a pass reads a few columns and changes all its rows in one UPDATE,
        where ORM objects cost a flush per row (delivery runs twice per signing flow)."""
        lease_until = now + self._lease
        with self._sessions.begin() as session:
            rows = session.execute(
                select(
                    _MESSAGES.c.id,
                    _MESSAGES.c.purpose,
                    _MESSAGES.c.request_id,
                    _MESSAGES.c.recipient,
                    _MESSAGES.c.sealed_message,
                    _MESSAGES.c.attempts,
                    _MESSAGES.c.not_after,
                )
                .where(
                    or_(
                        and_(
                            _MESSAGES.c.status == status_constant(OutboxStatus.PENDING),
                            _MESSAGES.c.next_attempt_at <= now,
                        ),
                        # A worker died holding it.
                        and_(
                            _MESSAGES.c.status == status_constant(OutboxStatus.SENDING),
                            _MESSAGES.c.lease_until <= now,
                        ),
                    ),
                    or_(_MESSAGES.c.not_after.is_(None), _MESSAGES.c.not_after > now),
                )
                # Messages with a deadline (OTPs, codes) before those without (notices): under
                # load an OTP must not wait behind the signing notices of earlier flows.
                .order_by(
                    _MESSAGES.c.not_after.is_(None),
                    _MESSAGES.c.next_attempt_at,
                    _MESSAGES.c.created_at,
                )
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            # Its last attempt ended with a dead worker: stop, or a message that crashes
            # workers would be retried for ever.
            exhausted = [row for row in rows if row.attempts >= self._max_attempts]
            claimed = [row for row in rows if row.attempts < self._max_attempts]
            if exhausted:
                session.execute(
                    update(_MESSAGES)
                    .where(_MESSAGES.c.id.in_([row.id for row in exhausted]))
                    .values(
                        status=OutboxStatus.FAILED,
                        sealed_message=None,
                        lease_until=None,
                        last_error="lease expired after the last attempt",
                    )
                )
            if claimed:
                session.execute(
                    update(_MESSAGES)
                    .where(_MESSAGES.c.id.in_([row.id for row in claimed]))
                    .values(
                        status=OutboxStatus.SENDING,
                        lease_until=lease_until,
                        attempts=_MESSAGES.c.attempts + 1,
                    )
                )
        for row in exhausted:
            logger.error("outbox.delivery.failed", extra=_claim_fields(row))
        claims = [
            Claim(
                id=row.id,
                purpose=row.purpose,
                request_id=row.request_id,
                recipient=row.recipient,
                sealed_message=row.sealed_message,
                attempts=row.attempts + 1,
                not_after=row.not_after,
                lease_until=lease_until,
            )
            for row in claimed
        ]
        return claims, len(exhausted)

    def _deliver(self, claim: Claim) -> str:
        message = self._ready_message(claim)
        if isinstance(message, str):
            return message
        if (
            self._unrecorded
            and min(sent.claim.lease_until for sent in self._unrecorded)
            < self._clock.now() + self._send_budget
        ):
            # This send may take the whole budget: record the earlier ones within their leases.
            self._record_sent()
        fields = _claim_fields(claim)
        try:
            self._transport.send(
                self._from_header + message, self._envelope_from, [claim.recipient]
            )
        except PermanentDeliveryError as exc:
            self._fail(claim, str(exc))
            return "failed"
        except TransientDeliveryError as exc:
            return self._retry(claim, str(exc))
        except Exception as exc:
            logger.exception("outbox.delivery.error", extra=fields)
            return self._retry(claim, _truncate(_describe(exc)))

        # The server has it, so this row must never be claimed again: the mark is committed
        # with the pass's others (_record_sent), well within the lease.
        self._unrecorded.append(_Sent(claim, self._clock.now()))
        self._sent_this_pass.add(claim.id)
        return "sent"

    def _record_sent(self) -> None:
        """Commit the `sent` marks of the messages sent so far, with their audit events, in one
        transaction. Unconditional on the lease: a message sent is sent. Called at the end of a
        pass and before any other write of the worker, so that outcomes are recorded in order
        and a failing write leaves no sent message behind unrecorded (the next call retries)."""
        if not self._unrecorded:
            return
        marks = [
            {"message_id": sent.claim.id, "sent_at": sent.sent_at} for sent in self._unrecorded
        ]
        with self._sessions.begin() as session:
            # One mark: a plain execute, cheaper than an executemany of one.
            session.connection().execute(_MARK_SENT, marks[0] if len(marks) == 1 else marks)
            for sent in self._unrecorded:
                self._record(session, sent.claim, "mail.delivered", "ok", sent.sent_at)
        recorded, self._unrecorded = self._unrecorded, []
        for sent in recorded:
            MAILS_DELIVERED.labels(sent.claim.purpose).inc()
            logger.info("outbox.delivery.sent", extra=_claim_fields(sent.claim))

    def _ready_message(self, claim: Claim) -> bytes | str:
        """The message to send now, or the outcome ("expired", ...) that replaces sending it."""
        now = self._clock.now()
        if claim.not_after is not None and now >= claim.not_after:
            self._settle(claim, status=OutboxStatus.EXPIRED, sealed_message=None, lease_until=None)
            logger.info("outbox.message.expired", extra=_claim_fields(claim))
            return "expired"
        if now + self._send_budget > claim.lease_until:
            # Too little of the lease is left to finish an SMTP exchange before another worker
            # may claim the message: hand it back untried rather than risk a second copy.
            self.release([claim])
            return "released"
        if claim.sealed_message is None:
            self._fail(claim, "nothing to send (the message was wiped)")
            return "failed"
        try:
            return open_sealed(
                self._seal_key,
                claim.sealed_message,
                associated_data(claim.id, claim.request_id, claim.recipient),
            )
        except SealBroken:
            self._fail(claim, "the sealed message does not open (other key, or altered)")
            return "failed"

    def _retry(self, claim: Claim, error: str) -> str:
        fields = {**_claim_fields(claim), "error": error}
        if claim.attempts >= self._max_attempts:
            self._fail(claim, error)
            return "failed"
        next_attempt_at = self._clock.now() + timedelta(
            seconds=self.backoff_seconds(claim.attempts)
        )
        self._settle(
            claim,
            status=OutboxStatus.PENDING,
            next_attempt_at=next_attempt_at,
            lease_until=None,
            last_error=error,
        )
        logger.warning(
            "outbox.delivery.retry", extra={**fields, "next_attempt_at": next_attempt_at}
        )
        return "retried"

    def _fail(self, claim: Claim, error: str) -> None:
        self._settle(
            claim,
            status=OutboxStatus.FAILED,
            sealed_message=None,
            lease_until=None,
            last_error=error,
        )
        logger.error("outbox.delivery.failed", extra={**_claim_fields(claim), "error": error})

    def _settle(self, claim: Claim, **values: Any) -> None:
        """Record an outcome, only while the claim is still ours (the attempt count fences it)."""
        self._record_sent()
        with self._sessions.begin() as session:
            matched = session.scalars(
                update(_MESSAGES)
                .where(
                    _MESSAGES.c.id == claim.id,
                    _MESSAGES.c.status == status_constant(OutboxStatus.SENDING),
                    _MESSAGES.c.attempts == claim.attempts,
                )
                .values(**values)
                .returning(_MESSAGES.c.id)
            ).all()
            status = values.get("status")
            if matched and status in (OutboxStatus.EXPIRED, OutboxStatus.FAILED):
                self._record(session, claim, f"mail.{status}", "not_delivered", self._clock.now())
        if not matched:
            logger.warning("outbox.delivery.lease_lost", extra=_claim_fields(claim))

    def _record(
        self, session: Session, claim: Claim, action: str, outcome: str, now: datetime
    ) -> None:
        if self._audit is not None:
            self._audit(session).record(
                now=now,
                action=action,
                actor="delivery",
                outcome=outcome,
                target_id=claim.request_id or claim.id,
                details={"purpose": claim.purpose, "attempt": claim.attempts},
            )

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after `attempts` failed tries: exponential, capped, with a little jitter."""
        delay = self._backoff_base * 2.0 ** max(attempts - 1, 0)
        jitter = 1 + BACKOFF_JITTER * random.random()  # noqa: S311 - spreading retries, not a secret
        return min(delay * jitter, MAX_BACKOFF_SECONDS)


class _MessageFields(Protocol):
    """A claim, or a row of the claim query: what a delivery log line names."""

    @property
    def id(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...


def _claim_fields(claim: _MessageFields) -> dict[str, Any]:
    return {
        "outbox_id": claim.id,
        "purpose": claim.purpose,
        "signing_request_id": claim.request_id,
        "attempts": claim.attempts,
    }


async def run_delivery_loop(
    worker: DeliveryWorker,
    poll_seconds: float,
    courier: Courier,
    stop: asyncio.Event,
    *,
    limit: int = CLAIM_BATCH,
) -> None:
    """Deliver until `stop` is set; between passes, wait for the courier's wakeup, `stop` or
    the poll. The courier must be bound to this event loop (`Courier.bind`).

    Each pass sends what the courier carries; it claims from the database only on the first
    pass, on a poll, when a nudge asks for it, or after a full database batch. A full batch, or
    more carried claims, is followed at once by the next pass. A failing pass (the database is
    down) is logged and retried with a growing pause, up to 30 s; the loop itself never dies of
    it. The worker runs in a thread of its own, always the same one (it owns its SMTP
    connection); several loops share one courier, each taking small batches, so they share the
    work.
    """
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery")
    failures = 0
    claim_database = True
    try:
        while not stop.is_set():
            # Cleared before the pass: what a nudge until now was about, this pass sees.
            courier.wakeup.clear()
            handed = courier.take(limit)
            claim_database = courier.database_due() or claim_database
            try:
                report = await loop.run_in_executor(
                    thread,
                    functools.partial(
                        worker.deliver_due, limit, handed, claim_database=claim_database
                    ),
                )
            except Exception:
                failures += 1
                logger.exception("outbox.delivery.error", extra={"consecutive_failures": failures})
                # Whatever was handed over is leased: back to the database with it.
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(thread, worker.release, handed)
                await _wait(min(poll_seconds * 2.0**failures, 30.0), None, stop)
                claim_database = True
                continue
            failures = 0
            claim_database = claim_database and report.claimed + report.failed >= limit
            if not claim_database and not courier.carrying():
                # Nothing came for a whole poll: look at the database.
                claim_database = not await _wait(poll_seconds, courier.wakeup, stop)
        # Not in the `finally`: if this task is cancelled mid-pass, the pass's thread still
        # uses the connection, and closing it under that thread would break a send half-way.
        await loop.run_in_executor(thread, worker.release, courier.unbind())
        await loop.run_in_executor(thread, worker.close)
    finally:
        thread.shutdown(wait=False)


async def _wait(seconds: float, wakeup: Nudge | None, stop: asyncio.Event) -> bool:
    """Until the wakeup, `stop` or `seconds`; whether it was not the time that ran out."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        done, _pending = await asyncio.wait(
            waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        return bool(done)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)


def outbox_stats(session: Session, now: datetime) -> tuple[int, float]:
    """For metrics: (messages pending or being sent, age in seconds of the oldest pending)."""
    depth = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]))
    )
    oldest: datetime | None = session.scalar(
        select(func.min(OutboxMessage.created_at)).where(
            OutboxMessage.status == OutboxStatus.PENDING
        )
    )
    age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return int(depth or 0), age
