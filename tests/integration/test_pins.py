"""PIN changes on a real database: two changes with the same current PIN, one after the other's
read but before its commit, store one PIN (PostgreSQL row locks; SQLite takes its write lock at
BEGIN, so there the second change simply reads the new PIN)."""

from __future__ import annotations

import threading

import pytest

from app.crypto.secrets import pin_mac
from app.db import unit_of_work
from app.errors import DomainError
from app.models import Credential, Role
from app.runtime import Runtime
from app.services.clients import Caller
from app.units import Services
from tests.factories import Factory

PORTAL = Caller(id="portal", name="portal", role=Role.PORTAL, agency=None)


@pytest.mark.postgres_only
def test_a_pin_change_overtaken_by_another_is_refused(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    assert person.credential_id is not None
    credential_id = person.credential_id
    now = runtime.clock.now()

    held = runtime.sessions()
    Services(runtime, held).pins.change(PORTAL, credential_id, person.pin, "730519", now)
    outcome: list[str] = []

    def change_too() -> None:
        try:
            with unit_of_work(runtime.sessions) as session:
                Services(runtime, session).pins.change(
                    PORTAL, credential_id, person.pin, "802461", now
                )
            outcome.append("stored")
        except DomainError as error:
            outcome.append(error.code)

    second = threading.Thread(target=change_too)
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive(), "the second change should wait for the first one's row lock"
    held.commit()
    held.close()
    second.join(timeout=30)

    # It had verified the same current PIN, but that PIN is gone: refused, not counted.
    assert outcome == ["conflict"]
    with runtime.sessions() as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None and credential.status == "active"
        assert credential.pin_mac == pin_mac(runtime.keys.pin_pepper, credential_id, "730519")
        assert credential.pin_failures == 0
