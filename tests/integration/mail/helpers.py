"""The message the mail tests queue and the helpers that queue it, as a use case would."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.db import make_sessionmaker, unit_of_work
from app.models.outbox import OutboxMessage
from app.services.mail.courier import COURIER_KEY, Claim, Courier
from app.services.mail.delivery import DeliveryReport, DeliveryWorker
from app.services.mail.outbox import Outbox
from app.services.mail.transport import SmtpTransport, Transport
from app.settings import Settings

RECIPIENT = "aminah.yusof@jdn.gov.my"
SUBJECT = "Kod OTP tandatangan digital / Digital signature OTP"
CODE = "493817"
BODY = (
    f"Kod OTP / OTP code: {CODE}\n"
    "\n"
    "Dokumen: Baucar Bayaran PV-2026-000123 — Pejabat Perakaunan Negeri\n"
    "Sila sahkan sebelum 10:02 (waktu Malaysia). Jangan kongsi kod ini.\n"
    "\n"
    "Document: Baucar Bayaran PV-2026-000123 — State Accountant's Office\n"
    "Please approve before 10:02 “Café Rakyat” ✓. Never share this code.\n"
)


def smtp_settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_timeout_seconds": 5.0,
        "delivery_backoff_base_seconds": 2.0,
        "delivery_max_attempts": 3,
        "mail_from": "roamsign <no-reply@roamsign.local>",
    }
    return Settings(**(values | overrides))


class Workers:
    """Builds delivery workers and closes their SMTP connections after the test."""

    def __init__(self, sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock) -> None:
        self.sessions, self.keys, self.clock = sessions, keys, clock
        self.built: list[DeliveryWorker] = []

    def __call__(
        self, settings: Settings, transport: Transport | None = None, **kwargs: Any
    ) -> DeliveryWorker:
        worker = DeliveryWorker(
            self.sessions,
            self.keys.outbox_seal,
            transport or SmtpTransport(settings),
            self.clock,
            settings,
            **kwargs,
        )
        self.built.append(worker)
        return worker


def enqueue(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    *,
    request_id: str | None = None,
    not_after_seconds: float | None = None,
    body: str = BODY,
) -> str:
    """Queue one message in its own committed transaction, as a use case would."""
    now = clock.now()
    with sessions.begin() as session:
        message = Outbox(session, keys.outbox_seal).enqueue(
            purpose="otp",
            recipient=RECIPIENT,
            subject=SUBJECT,
            body=body,
            now=now,
            request_id=request_id or str(uuid.uuid4()),
            not_after=None
            if not_after_seconds is None
            else now + timedelta(seconds=not_after_seconds),
        )
        return message.id


def bound_courier(**kwargs: Any) -> Courier:
    """A courier bound to the running event loop, as the server's lifespan binds its own."""
    courier = Courier(**kwargs)
    courier.bind(asyncio.get_running_loop())
    return courier


def load(sessions: sessionmaker[Session], message_id: str) -> OutboxMessage:
    with sessions() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


class ObservedWorker(DeliveryWorker):
    """Signals each finished pass; optionally fails its first one."""

    def __init__(self, *args: Any, fail_first: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passed = threading.Event()
        self._fail_first_pass = fail_first

    def deliver_due(
        self, limit: int = 100, handed: Sequence[Claim] = (), *, claim_database: bool = True
    ) -> DeliveryReport:
        if self._fail_first_pass:
            self._fail_first_pass = False
            raise RuntimeError("database unavailable")
        try:
            return super().deliver_due(limit, handed, claim_database=claim_database)
        finally:
            self.passed.set()


def courier_sessions(engine: Engine, courier: Courier) -> sessionmaker[Session]:
    """Sessions that carry `courier`, as the runtime's do (app.runtime.Runtime.build)."""
    return make_sessionmaker(engine, info={COURIER_KEY: courier})


def queue_in_unit(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, **kwargs: Any
) -> str:
    """Queue one message in a unit of work, as an endpoint does (after-commit hooks run)."""
    with unit_of_work(sessions) as session:
        return queue_in(session, keys, clock, **kwargs)


def queue_in(session: Session, keys: Secrets, clock: FrozenClock, **kwargs: Any) -> str:
    return (
        Outbox(session, keys.outbox_seal)
        .enqueue(
            purpose="otp",
            recipient=RECIPIENT,
            subject=SUBJECT,
            body=BODY,
            now=clock.now(),
            request_id=str(uuid.uuid4()),
            **kwargs,
        )
        .id
    )
