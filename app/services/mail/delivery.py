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

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.policy import SMTP
from email.utils import parseaddr
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.crypto.keys import SealKey
from app.crypto.sealing import SealBroken
from app.db import Write, single_statement_unit, unit_of_work
from app.errors import ConfigurationError
from app.metrics import MAILS_DELIVERED
from app.models.outbox import OutboxStatus
from app.services.audit.log import AuditLog
from app.services.mail.claims import claim_due, expire_overdue, log_fields, mark_sent, settle
from app.services.mail.courier import DEFAULT_LEASE_SECONDS, Claim
from app.services.mail.outbox import associated_data
from app.services.mail.transport import (
    PermanentDeliveryError,
    TransientDeliveryError,
    Transport,
    error_text,
)
from app.settings import Settings

logger = logging.getLogger("roamsign.delivery")

MAX_BACKOFF_SECONDS = 300.0
BACKOFF_JITTER = 0.2  # up to +20 %, so retries of one outage do not arrive in lockstep
EXPIRY_SWEEP_INTERVAL = timedelta(seconds=1)


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
        seal_key: SealKey,
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
            expired = expire_overdue(session, now)
        for message_id in expired:
            logger.info("outbox.message.expired", extra={"outbox_id": message_id})
        return len(expired)

    def _claim(self, now: datetime, limit: int) -> tuple[list[Claim], int]:
        """Take due messages in a short committed transaction; returns (claims, failed)."""
        with self._sessions.begin() as session:
            claims, exhausted = claim_due(
                session, now, limit, now + self._lease, self._max_attempts
            )
        for row in exhausted:
            logger.error("outbox.delivery.failed", extra=log_fields(row))
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
        fields = log_fields(claim)
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
            return self._retry(claim, error_text(exc))

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
        # Each mark is written with its event, in one statement where the database allows;
        # a lone one (a quiet server) is then a unit of one statement, without BEGIN.
        unit = (
            single_statement_unit(self._sessions)
            if len(self._unrecorded) == 1
            else unit_of_work(self._sessions)
        )
        with unit as session:
            for sent in self._unrecorded:
                mark = mark_sent(sent.claim.id, sent.sent_at)
                self._record(session, sent.claim, "mail.delivered", "ok", sent.sent_at, mark)
        recorded, self._unrecorded = self._unrecorded, []
        for sent in recorded:
            MAILS_DELIVERED.labels(sent.claim.purpose).inc()
            logger.info("outbox.delivery.sent", extra=log_fields(sent.claim))

    def _ready_message(self, claim: Claim) -> bytes | str:
        """The message to send now, or the outcome ("expired", ...) that replaces sending it."""
        now = self._clock.now()
        if claim.not_after is not None and now >= claim.not_after:
            self._settle(claim, status=OutboxStatus.EXPIRED, sealed_message=None, lease_until=None)
            logger.info("outbox.message.expired", extra=log_fields(claim))
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
            return self._seal_key.open(
                claim.sealed_message,
                associated_data(claim.id, claim.request_id, claim.recipient),
            )
        except SealBroken:
            self._fail(claim, "the sealed message does not open (other key, or altered)")
            return "failed"

    def _retry(self, claim: Claim, error: str) -> str:
        fields = {**log_fields(claim), "error": error}
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
        logger.error("outbox.delivery.failed", extra={**log_fields(claim), "error": error})

    def _settle(self, claim: Claim, **values: Any) -> None:
        """Record an outcome, only while the claim is still ours (the attempt count fences it)."""
        self._record_sent()
        with self._sessions.begin() as session:
            matched = settle(session, claim, values)
            status = values.get("status")
            if matched and status in (OutboxStatus.EXPIRED, OutboxStatus.FAILED):
                self._record(session, claim, f"mail.{status}", "not_delivered", self._clock.now())
        if not matched:
            logger.warning("outbox.delivery.lease_lost", extra=log_fields(claim))

    def _record(
        self,
        session: Session,
        claim: Claim,
        action: str,
        outcome: str,
        now: datetime,
        *together: Write,
    ) -> None:
        """The outcome's audit event, written with `together` (its outbox change)."""
        if self._audit is None:
            for write in together:
                session.connection().execute(write.statement, write.params)
            return
        self._audit(session).record(
            now=now,
            action=action,
            actor="delivery",
            outcome=outcome,
            target_id=claim.request_id or claim.id,
            details={"purpose": claim.purpose, "attempt": claim.attempts},
            together=together,
        )

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after `attempts` failed tries: exponential, capped, with a little jitter."""
        delay = self._backoff_base * 2.0 ** max(attempts - 1, 0)
        jitter = 1 + BACKOFF_JITTER * random.random()  # noqa: S311 - spreading retries, not a secret
        return min(delay * jitter, MAX_BACKOFF_SECONDS)
