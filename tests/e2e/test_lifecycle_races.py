"""Concurrent lifecycle calls against two server processes on one PostgreSQL: PIN changes, one
PIN token, device activations, one activation code, resends, one CSC SAD. Each ends in one
consistent state, whichever process answers which call.

PostgreSQL only: on SQLite every transaction takes the write lock at BEGIN (app/db.py), so
concurrent calls run one after the other and never meet the guards these tests are about.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keys import Secrets
from app.crypto.secrets import pin_mac
from app.models import Credential, OutboxMessage, Signature, SigningRequest
from app.models.device import Device
from app.services.mail.sink import MailSink
from tests.e2e.conftest import ServerStarter, at_once
from tests.factories import Factory
from tests.helpers import otp_from_message, pending_device
from tests.mailbox import TOKEN_LINE
from tests.mobile_app import MobileApp

pytestmark = pytest.mark.postgres_only

WORKERS = 2
CALLS = 10
NEW_PINS = [
    "730519",
    "802461",
    "614907",
    "925813",
    "470362",
    "381946",
    "259074",
    "147085",
    "690328",
    "836251",
]
SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def codes(answers: list[httpx.Response]) -> Counter[str]:
    return Counter(
        "ok" if answer.is_success else f"{answer.status_code} {answer.json().get('code')}"
        for answer in answers
    )


def outbox_count(sessions: sessionmaker[Session], purpose: str, status: str | None = None) -> int:
    query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.purpose == purpose)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    with sessions() as session:
        return session.scalar(query) or 0


def token_in(message: Any) -> str:
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = TOKEN_LINE.search(body)
    assert match, body
    return match.group(1)


def device_states(
    sessions: sessionmaker[Session], user_id: str
) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        return {
            device.id: (device.status, device.deactivation_reason)
            for device in session.scalars(select(Device).where(Device.user_id == user_id))
        }


async def test_concurrent_pin_changes_and_one_reset_token_store_one_pin(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    sessions: sessionmaker[Session],
    keys: Secrets,
) -> None:
    changing = e2e_factory.person(email="change@jdn.gov.my")
    resetting = e2e_factory.person(email="reset@jdn.gov.my")
    portal = e2e_factory.client("portal", "portal")
    server = start_server(workers=WORKERS)

    # Ten changes with the right current PIN, each to its own new PIN.
    path = f"/v1/credentials/{changing.credential_id}/pin"
    answers = await at_once(
        server,
        portal,
        [("PUT", path, {"current_pin": changing.pin, "new_pin": pin}) for pin in NEW_PINS],
    )

    outcome = codes(answers)
    assert outcome["ok"] == 1, outcome
    # The others find the PIN changed under them, or (arriving after the change) present a
    # current PIN that no longer is, counted as wrong; five of those lock the credential.
    assert set(outcome) <= {
        "ok",
        "409 conflict",
        "403 authorization_failed",
        "423 credential_locked",
    }, outcome
    (winner,) = [pin for pin, a in zip(NEW_PINS, answers, strict=True) if a.is_success]
    with sessions() as session:
        credential = session.get(Credential, changing.credential_id)
        assert credential is not None
        assert credential.pin_mac == pin_mac(keys.pin_pepper, credential.id, winner)
        wrong = outcome["403 authorization_failed"]
        assert credential.pin_failures == wrong
        assert (credential.status == "locked") == (wrong >= 5), (credential.status, outcome)

    # Ten uses of one e-mailed reset token, each with its own new PIN.
    with server.client(portal) as client:
        sent = client.post(f"/v1/credentials/{resetting.credential_id}/pin-reset")
        assert sent.status_code == 202, sent.text
    token = token_in(sink.wait_for(lambda m: m["To"] == "reset@jdn.gov.my", timeout=10))
    path = f"/v1/credentials/{resetting.credential_id}/pin"
    answers = await at_once(
        server, portal, [("PUT", path, {"token": token, "new_pin": pin}) for pin in NEW_PINS]
    )

    assert codes(answers) == {"ok": 1, "409 otp_consumed": CALLS - 1}, codes(answers)
    (winner,) = [pin for pin, a in zip(NEW_PINS, answers, strict=True) if a.is_success]
    with sessions() as session:
        credential = session.get(Credential, resetting.credential_id)
        assert credential is not None and credential.status == "active"
        assert credential.pin_mac == pin_mac(keys.pin_pepper, credential.id, winner)
    # One "your PIN was changed" e-mail each.
    assert outbox_count(sessions, "pin_changed") == 2


async def test_concurrent_activations_leave_one_active_device_and_use_a_code_once(
    start_server: ServerStarter, e2e_factory: Factory, sessions: sessionmaker[Session]
) -> None:
    person = e2e_factory.person()
    # Pending registrations of one person, as concurrent registrations can leave them.
    codes_of = {
        pending_device(e2e_factory.runtime, person, f"{n:06d}"): f"{n:06d}"
        for n in range(111111, 111111 + 8)
    }
    server = start_server(workers=WORKERS)

    answers = await at_once(
        server,
        None,
        [
            (
                "POST",
                f"/v1/devices/{device_id}/activation",
                {"code": code, "public_key": MobileApp().public_key_pem},
            )
            for device_id, code in codes_of.items()
        ],
    )

    outcome = codes(answers)
    # The latest activation wins (FAQ 7); one that keeps losing the race is told to retry.
    assert set(outcome) <= {"ok", "409 conflict"}, outcome
    states = device_states(sessions, person.user_id)
    active = [device_id for device_id, (status, _) in states.items() if status == "active"]
    assert len(active) == 1, states
    for device_id, answer in zip(codes_of, answers, strict=True):
        if device_id in active:
            assert answer.is_success
        elif answer.is_success:
            assert states[device_id] == ("deactivated", "replaced")
        else:
            assert states[device_id] == ("pending_activation", None)

    # Ten apps with the one right code of one registration: one of them gets the device.
    other = e2e_factory.person()
    device_id = pending_device(e2e_factory.runtime, other, "318264")
    apps = [MobileApp(device_id) for _ in range(CALLS)]
    path = f"/v1/devices/{device_id}/activation"
    answers = await at_once(
        server,
        None,
        [("POST", path, {"code": "318264", "public_key": app.public_key_pem}) for app in apps],
    )

    assert codes(answers) == {"ok": 1, "409 otp_consumed": CALLS - 1}, codes(answers)
    (winner,) = [app for app, answer in zip(apps, answers, strict=True) if answer.is_success]
    with sessions() as session:
        device = session.get(Device, device_id)
        assert device is not None and device.status == "active"
        assert device.public_key_pem == winner.public_key_pem
        assert device.activation_attempts == 1
    assert device_states(sessions, other.user_id) == {device_id: ("active", None)}


async def test_concurrent_resends_stop_at_the_daily_limit(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.token_user(email="resend@jdn.gov.my")
    portal = e2e_factory.client("portal", "portal")
    jdn = e2e_factory.client("jdn", "jdn_admin")
    server = start_server(workers=WORKERS)
    with server.client(portal) as client:
        opened = client.post(f"/v1/users/{person.mykad}/roaming-applications")
        assert opened.status_code == 201, opened.text
    application_id = opened.json()["id"]
    limit = e2e_factory.runtime.settings.token_emails_per_day

    answers = await at_once(
        server,
        jdn,
        [("POST", f"/v1/roaming-applications/{application_id}/notifications", None)] * 12,
    )

    assert codes(answers) == {"ok": limit, "429 rate_limited": 12 - limit}, codes(answers)
    # The opening's e-mail and one per accepted resend, all delivered, nothing more queued.
    assert outbox_count(sessions, "application_email") == 1 + limit
    deadline = time.monotonic() + 15
    while outbox_count(sessions, "application_email", "sent") < 1 + limit:
        assert time.monotonic() < deadline, "the e-mails were not all delivered"
        time.sleep(0.1)
    assert len([m for m in sink.messages if m["To"] == "resend@jdn.gov.my"]) == 1 + limit


async def test_one_sad_signs_one_hash_across_processes(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person(email="csc@jdn.gov.my")
    signer = e2e_factory.client("igfmas", "signer")
    server = start_server(workers=WORKERS)
    digest = hashlib.sha256(b"signed attributes").digest()
    hash_b64 = base64.b64encode(digest).decode()
    with server.client(signer) as client:
        sent = client.post(
            "/csc/v1/credentials/sendOTP",
            json={
                "credentialID": person.credential_id,
                "hash": [hash_b64],
                "hashAlgo": SHA256,
                "description": "Baucar Bayaran PV-2026-000123",
            },
        )
        assert sent.status_code == 204, sent.text
    otp = otp_from_message(sink.wait_for(lambda m: m["To"] == "csc@jdn.gov.my", timeout=10))
    authorize = {
        "credentialID": person.credential_id,
        "numSignatures": 1,
        "hash": [hash_b64],
        "PIN": person.pin,
        "OTP": otp,
    }

    # One OTP, one SAD...
    grants = await at_once(
        server, signer, [("POST", "/csc/v1/credentials/authorize", authorize)] * CALLS
    )
    assert [a.status_code for a in grants].count(200) == 1, [a.text for a in grants]
    (sad,) = [a.json()["SAD"] for a in grants if a.status_code == 200]
    # ...one SAD, one signature.
    sign_hash = {
        "credentialID": person.credential_id,
        "SAD": sad,
        "hash": [hash_b64],
        "hashAlgo": SHA256,
        "signAlgo": ECDSA_SHA256,
    }
    answers = await at_once(
        server, signer, [("POST", "/csc/v1/signatures/signHash", sign_hash)] * CALLS
    )

    assert [a.status_code for a in answers].count(200) == 1, [a.text for a in answers]
    refusals = {a.json()["error"] for a in answers if a.status_code != 200}
    assert refusals == {"invalid_request"}, [a.text for a in answers]
    (signed,) = [a.json()["signatures"][0] for a in answers if a.status_code == 200]
    with sessions() as session:
        rows = session.scalars(select(Signature)).all()
        assert len(rows) == 1 and rows[0].signature == base64.b64decode(signed)
        assert session.scalars(select(SigningRequest.status)).one() == "signed"
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.certificate_pem is not None
    public_key = x509.load_pem_x509_certificate(credential.certificate_pem.encode()).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(rows[0].signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
