"""The notices the signing service will queue: after a signature, and when a PIN locks."""

from __future__ import annotations

from app.clock import FrozenClock
from app.db import unit_of_work
from app.models import Credential, SigningRequest, User
from app.runtime import Runtime
from app.services.mail.notices import queue_credential_locked_notice, queue_signing_notice
from app.settings import Settings
from tests.factories import Factory
from tests.mailbox import mails


def test_signing_and_locked_notices(runtime: Runtime, clock: FrozenClock) -> None:
    factory = Factory(runtime)
    factory.init_ca()
    person = factory.person()
    with unit_of_work(runtime.sessions) as session:
        user = session.get(User, person.user_id)
        credential = session.get(Credential, person.credential_id)
        assert user is not None and credential is not None
        request = SigningRequest(
            id="4b1d5f0e-0000-4000-8000-000000000001",
            document_name="Baucar Bayaran PV-2026-000123",
        )
        signed = queue_signing_notice(
            session, runtime.notices, user, request, "igfmas", clock.now()
        )
        locked = queue_credential_locked_notice(
            session, runtime.notices, user, credential, clock.now()
        )
        assert signed is not None and locked is not None
    [notice] = mails(runtime.sessions, runtime.keys.outbox_seal, purpose="signing_notice")
    assert notice.recipient == "aisyah@jdn.gov.my"
    assert notice.subject == "Dokumen telah ditandatangani / Document signed"
    assert "Document: Baucar Bayaran PV-2026-000123" in notice.text
    assert "Requesting system: igfmas" in notice.text
    assert "Time: 2026-11-27 18:00:00 (UTC+08:00, Asia/Kuala_Lumpur)" in notice.text
    assert "4b1d5f0e-0000-4000-8000-000000000001" in notice.text
    [lock] = mails(runtime.sessions, runtime.keys.outbox_seal, purpose="credential_locked")
    assert "locked" in lock.subject and person.credential_id in lock.text


def test_no_address_no_notice(runtime: Runtime, clock: FrozenClock) -> None:
    factory = Factory(runtime)
    factory.init_ca()
    person = factory.person(email=None)
    with unit_of_work(runtime.sessions) as session:
        user = session.get(User, person.user_id)
        assert user is not None
        request = SigningRequest(id="x", document_name="PV")
        assert (
            queue_signing_notice(session, runtime.notices, user, request, "igfmas", clock.now())
            is None
        )


def test_each_runtime_writes_its_notices_in_its_own_zone(
    runtime: Runtime, settings: Settings, clock: FrozenClock
) -> None:
    """Two runtimes in one process (two apps, or a test beside the app): the one built last
    does not change the other's zone."""
    factory = Factory(runtime)
    factory.init_ca()
    person = factory.person()
    london = Runtime.build(settings.model_copy(update={"timezone": "Europe/London"}), clock)
    london.engine.dispose()
    try:
        with unit_of_work(runtime.sessions) as session:
            user = session.get(User, person.user_id)
            assert user is not None
            for each, request_id in ((runtime, "kl"), (london, "london")):
                request = SigningRequest(id=request_id, document_name="PV")
                queue_signing_notice(session, each.notices, user, request, "igfmas", clock.now())
    finally:
        london.key_store.close()
    texts = {
        mail.text.rsplit("Reference: ", 1)[1].strip(): mail.text
        for mail in mails(runtime.sessions, runtime.keys.outbox_seal, purpose="signing_notice")
    }
    assert "Time: 2026-11-27 18:00:00 (UTC+08:00, Asia/Kuala_Lumpur)" in texts["kl"]
    assert "Time: 2026-11-27 10:00:00 (UTC+00:00, Europe/London)" in texts["london"]
