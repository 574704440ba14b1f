"""Delivery workers on the test database and a real SMTP sink (tests/conftest.py's `sink`),
with the settings that point them at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.services.mail.delivery import DeliveryWorker
from app.services.mail.sink import MailSink
from app.settings import Settings
from tests.integration.mail.helpers import Workers, smtp_settings


@pytest.fixture
def settings(sink: MailSink) -> Settings:
    return smtp_settings(sink.port)


@pytest.fixture
def workers(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> Iterator[Workers]:
    factory = Workers(sessions, keys, clock)
    yield factory
    for worker in factory.built:
        worker.close()


@pytest.fixture
def worker(workers: Workers, settings: Settings) -> DeliveryWorker:
    return workers(settings)


@pytest.fixture(autouse=True)
def empty_database_after(sessions: sessionmaker[Session]) -> None:
    """Every test here leaves the database empty, even one that queues through `engine` alone
    (the courier's tests): run in another order, their rows reached the delivery tests."""
