"""The signing flow over HTTP: every answer, in the contract's order."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from app.clock import FrozenClock
from app.models import AuditEvent, Credential, Signature, SigningRequest
from app.runtime import Runtime
from tests.api import conftest as api
from tests.api.conftest import Keys, bearer
from tests.factories import Factory, Person
from tests.helpers import (
    document_hash,
    flushed_new_objects,
    openssl_verify,
    queued_message,
    queued_otp,
)

WRONG_PIN = "902847"
VOUCHER = "Baucar Bayaran PV-2026-000123"  # what `document_hash()` hashes by default


async def request_otp(
    client: httpx.AsyncClient, key: str, person: Person, **overrides: object
) -> httpx.Response:
    """`tests.api.conftest.request_otp` with the defaults these tests (and test_rate_limits)
    were written with: the voucher's hash (`document_hash()`) and channel `email`, where the
    API's default is `auto`."""
    fields: dict[str, object] = {"document": VOUCHER, "channel": "email", **overrides}
    return await api.request_otp(client, key, person, **fields)


async def submit(
    client: httpx.AsyncClient, key: str, request_id: str, otp: str, pin: str
) -> httpx.Response:
    return await client.post(
        f"/v1/signing-requests/{request_id}/signature",
        json={"otp": otp, "pin": pin},
        headers=bearer(key),
    )


def wrong(otp: str) -> str:
    return f"{(int(otp) + 1) % 1_000_000:06d}"


async def test_request_then_sign_with_cms(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, tmp_path: Path
) -> None:
    created = await request_otp(
        client, api_keys.signer, person, document_name="Baucar <b>O'Brien</b>"
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending"
    assert body["channel"] == "email"
    assert body["destination"] == "a***@jdn.gov.my"
    assert body["attempts_remaining"] == 3
    assert body["expires_at"] == "2026-11-27T10:02:00Z"

    message = queued_message(runtime.sessions, runtime.keys.outbox_seal, body["id"])
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert text.splitlines()[0].startswith("Kod OTP / OTP code: ")
    assert "Baucar <b>O'Brien</b>" in text  # verbatim, never interpreted
    assert message["X-Roamsign-Request-Id"] == body["id"]
    assert message["To"] == "aisyah@jdn.gov.my"
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, body["id"])

    signed = await submit(client, api_keys.signer, body["id"], otp, person.pin)
    assert signed.status_code == 201, signed.text
    signature = signed.json()
    assert signature["signature_format"] == "cms"
    assert signature["signature_algorithm"] == "ecdsa-with-SHA256"
    assert len(signature["certificate_chain"]) == 2

    document = tmp_path / "document.bin"
    document.write_bytes(b"Baucar Bayaran PV-2026-000123")
    (tmp_path / "sig.der").write_bytes(base64.b64decode(signature["signature"]))
    (tmp_path / "chain.pem").write_text("".join(signature["certificate_chain"]))
    verified = openssl_verify(tmp_path / "sig.der", document, tmp_path / "chain.pem")
    assert verified.returncode == 0, verified.stderr

    again = await submit(client, api_keys.signer, body["id"], otp, person.pin)
    assert again.status_code == 409
    assert again.json()["code"] == "otp_consumed"

    fetched = await client.get(
        f"/v1/signing-requests/{body['id']}", headers=bearer(api_keys.signer)
    )
    assert fetched.status_code == 200
    assert fetched.json()["status"] == "signed"
    assert fetched.json()["signature"]["signature"] == signature["signature"]


async def test_raw_signature_verifies_with_the_certificate(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    person = factory.person(key_algorithm="rsa-2048")
    created = (await request_otp(client, api_keys.signer, person, signature_format="raw")).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    signed = (await submit(client, api_keys.signer, created["id"], otp, person.pin)).json()
    assert signed["signature_algorithm"] == "sha256WithRSAEncryption"

    check = {
        "document_hash": document_hash(),
        "signature": signed["signature"],
        "signature_format": "raw",
        "certificate": signed["certificate"],
    }
    verified = await client.post(
        "/v1/signatures/verification", json=check, headers=bearer(api_keys.signer)
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["valid"] is True
    assert verified.json()["certificate_status"] == "good"
    assert verified.json()["signer"]["mykad_masked"] == "********" + person.mykad[-4:]

    check["document_hash"] = document_hash("another document")
    other = await client.post(
        "/v1/signatures/verification", json=check, headers=bearer(api_keys.signer)
    )
    assert other.json()["valid"] is False


async def test_cms_verification_endpoint(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (
        await request_otp(
            client,
            api_keys.signer,
            person,
            hash_algorithm="sha384",
            document_hash=document_hash(algorithm="sha384"),
        )
    ).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    signed = (await submit(client, api_keys.signer, created["id"], otp, person.pin)).json()
    assert signed["signature_algorithm"] == "ecdsa-with-SHA384"
    check = {
        "document_hash": document_hash(algorithm="sha384"),
        "hash_algorithm": "sha384",
        "signature": signed["signature"],
    }
    verified = (
        await client.post(
            "/v1/signatures/verification", json=check, headers=bearer(api_keys.signer)
        )
    ).json()
    assert verified["valid"] is True
    assert verified["signed_at"] == signed["signed_at"]
    assert verified["signer"]["name"] == person.name


async def test_base64_hash_is_accepted_and_answered_as_hex(
    client: httpx.AsyncClient, api_keys: Keys, person: Person
) -> None:
    digest_hex = document_hash()
    as_base64 = base64.b64encode(bytes.fromhex(digest_hex)).decode()
    created = await request_otp(client, api_keys.signer, person, document_hash=as_base64)
    assert created.status_code == 201
    fetched = await client.get(
        f"/v1/signing-requests/{created.json()['id']}", headers=bearer(api_keys.signer)
    )
    assert fetched.json()["document_hash"] == digest_hex


async def test_three_wrong_checks_lock_the_request(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    answers = [
        await submit(client, api_keys.signer, created["id"], wrong(otp), person.pin)
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert [a.json()["code"] for a in answers] == ["authorization_failed"] * 3
    assert [a.json()["attempts_remaining"] for a in answers] == [2, 1, 0]
    locked = await submit(client, api_keys.signer, created["id"], otp, person.pin)
    assert locked.status_code == 423
    assert locked.json()["code"] == "request_locked"
    with runtime.sessions() as session:
        request = session.get(SigningRequest, created["id"])
        assert request is not None and request.attempts == 3 and request.status == "locked"
        assert session.scalar(select(Signature)) is None


async def test_wrong_pin_and_wrong_otp_answer_the_same(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    bad_pin = await submit(client, api_keys.signer, created["id"], otp, WRONG_PIN)
    bad_otp = await submit(client, api_keys.signer, created["id"], wrong(otp), person.pin)
    for answer in (bad_pin, bad_otp):
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
    first, second = bad_pin.json(), bad_otp.json()
    assert first.pop("attempts_remaining") == 2 and second.pop("attempts_remaining") == 1
    assert first == second
    with runtime.sessions() as session:
        outcomes = [
            e.outcome
            for e in session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "otp.check.rejected")
                .order_by(AuditEvent.id)
            )
        ]
    # Nor does the trail: with a wrong OTP counting towards no lock, "otp_wrong" would confirm
    # a guessed PIN to whoever reads it.
    assert outcomes == ["check_failed", "check_failed"]


async def test_answers_come_in_the_contract_order(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    # Another signer's request looks absent, even with the right OTP.
    foreign = await submit(client, api_keys.other_signer, created["id"], otp, person.pin)
    assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"
    # Before the body's own validation too: a body the schema refuses changes nothing.
    for bad_body in ({"otp": otp}, {"otp": 123456, "pin": person.pin}):
        path = f"/v1/signing-requests/{created['id']}/signature"
        foreign = await client.post(path, json=bad_body, headers=bearer(api_keys.other_signer))
        assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"
        own = await client.post(path, json=bad_body, headers=bearer(api_keys.signer))
        assert own.status_code == 422 and own.json()["code"] == "validation_error"
    # A malformed OTP is a validation error and costs no attempt.
    malformed = await submit(client, api_keys.signer, created["id"], "12ab56", person.pin)
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["pointer"] == "/otp"
    # Past the window: otp_expired, not counted.
    clock.advance(120)
    expired = await submit(client, api_keys.signer, created["id"], otp, person.pin)
    assert expired.status_code == 410 and expired.json()["code"] == "otp_expired"
    with runtime.sessions() as session:
        request = session.get(SigningRequest, created["id"])
        assert request is not None and request.attempts == 0
    fetched = await client.get(
        f"/v1/signing-requests/{created['id']}", headers=bearer(api_keys.signer)
    )
    assert fetched.json()["status"] == "expired"


@pytest.mark.parametrize("content", [b"", b"{", b"\xef\xbb\xbf\xff", b'{"otp": 1}'])
async def test_both_calls_refuse_callers_before_bodies(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, content: bytes
) -> None:
    """They authenticate in their own unit of work (app.routing.OneUnitRoute): still 401, then 403,
    then (the signature) 404, and only then the body's 400 or 422."""
    created = (await request_otp(client, api_keys.signer, person)).json()
    json_type = {"Content-Type": "application/json"}
    for path in ("/v1/signing-requests", f"/v1/signing-requests/{created['id']}/signature"):
        nobody = await client.post(path, content=content, headers=json_type)
        assert nobody.status_code == 401 and nobody.json()["code"] == "unauthenticated"
        assert nobody.headers["www-authenticate"].startswith("Bearer")
        portal = await client.post(
            path, content=content, headers={**json_type, **bearer(api_keys.portal)}
        )
        assert portal.status_code == 403 and portal.json()["code"] == "forbidden"
        own = await client.post(
            path, content=content, headers={**json_type, **bearer(api_keys.signer)}
        )
        assert own.status_code in {400, 422}, own.text
        assert own.headers["content-type"] == "application/problem+json"
    foreign = await client.post(
        f"/v1/signing-requests/{created['id']}/signature",
        content=content,
        headers={**json_type, **bearer(api_keys.other_signer)},
    )
    assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"


async def test_last_second_of_the_window_still_signs(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    clock.advance(119.999)
    signed = await submit(client, api_keys.signer, created["id"], otp, person.pin)
    assert signed.status_code == 201


async def test_pending_otp_for_the_same_hash_is_refused_until_it_expires(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, clock: FrozenClock
) -> None:
    assert (await request_otp(client, api_keys.signer, person)).status_code == 201
    again = await request_otp(client, api_keys.other_signer, person)  # whoever asks
    assert again.status_code == 409 and again.json()["code"] == "otp_pending"
    other_document = await request_otp(
        client, api_keys.signer, person, document_hash=document_hash("x")
    )
    assert other_document.status_code == 201
    clock.advance(120)
    assert (await request_otp(client, api_keys.signer, person)).status_code == 201


async def test_an_otp_signs_only_its_own_request(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    first = (await request_otp(client, api_keys.signer, person)).json()
    second = (
        await request_otp(client, api_keys.signer, person, document_hash=document_hash("2"))
    ).json()
    first_otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, first["id"])
    crossed = await submit(client, api_keys.signer, second["id"], first_otp, person.pin)
    assert crossed.status_code == 403 and crossed.json()["code"] == "authorization_failed"


async def test_cancelled_request_cannot_be_signed(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    cancelled = await client.delete(
        f"/v1/signing-requests/{created['id']}", headers=bearer(api_keys.signer)
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    refused = await submit(client, api_keys.signer, created["id"], otp, person.pin)
    assert refused.status_code == 409 and refused.json()["code"] == "otp_consumed"


async def test_five_wrong_pins_lock_the_credential(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    answers = []
    for n in range(5):
        clock.advance(30)  # within the per-signer, per-person OTP limit
        created = (
            await request_otp(client, api_keys.signer, person, document_hash=document_hash(str(n)))
        ).json()
        otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
        answers.append(await submit(client, api_keys.signer, created["id"], otp, WRONG_PIN))
    assert {a.json()["code"] for a in answers} == {"authorization_failed"}
    refused = await request_otp(
        client, api_keys.signer, person, document_hash=document_hash("after")
    )
    assert refused.status_code == 423 and refused.json()["code"] == "credential_locked"
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert (
            credential is not None
            and credential.status == "locked"
            and credential.pin_failures == 5
        )


async def test_ten_failed_checks_hold_signing_back(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    # Failures that count need the right OTP; a credential that locks later than the person's
    # hold (20 wrong PINs here) shows the hold on its own.
    runtime.settings.pin_max_failures = 20
    opened = []
    for n in range(5):  # two signers, each within its per-person OTP limit
        key = api_keys.signer if n % 2 else api_keys.other_signer
        created = (
            await request_otp(client, key, person, document_hash=document_hash(str(n)))
        ).json()
        opened.append(
            (
                key,
                created["id"],
                queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"]),
            )
        )
    for key, request_id, otp in opened[:3]:  # 3 requests x 3 wrong PINs (right OTP), then a 10th
        for _ in range(3):
            await submit(client, key, request_id, otp, WRONG_PIN)
    key, request_id, otp = opened[3]
    await submit(client, key, request_id, otp, WRONG_PIN)
    key, request_id, otp = opened[4]
    held = await submit(client, key, request_id, otp, person.pin)
    assert held.status_code == 429 and held.json()["code"] == "rate_limited"
    assert int(held.headers["Retry-After"]) == 30
    clock.advance(30)
    signed = await submit(client, key, request_id, otp, person.pin)
    assert signed.status_code == 201


async def test_wrong_otps_lock_no_credential_and_hold_nobody(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    """An attacker with only an API key opens requests and sends made-up OTPs with wrong PINs:
    each request locks after its three tries, and the person can still sign."""
    for n in range(6):  # 18 failed checks: past the lock (5) and the hold (10) thresholds
        clock.advance(30)
        created = (
            await request_otp(client, api_keys.signer, person, document_hash=document_hash(str(n)))
        ).json()
        otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
        answers = [
            await submit(client, api_keys.signer, created["id"], wrong(otp), pin)
            for pin in (WRONG_PIN, person.pin, WRONG_PIN)
        ]
        assert [a.json()["attempts_remaining"] for a in answers] == [2, 1, 0]
        assert {a.json()["code"] for a in answers} == {"authorization_failed"}
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.status == "active"
        assert credential.pin_failures == 0
    clock.advance(30)
    created = (
        await request_otp(client, api_keys.other_signer, person, document_hash=document_hash("x"))
    ).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    signed = await submit(client, api_keys.other_signer, created["id"], otp, person.pin)
    assert signed.status_code == 201, signed.text


async def test_a_wrong_pin_counts_only_with_the_right_otp(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    await submit(client, api_keys.signer, created["id"], wrong(otp), WRONG_PIN)
    await submit(client, api_keys.signer, created["id"], otp, WRONG_PIN)
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.pin_failures == 1


async def test_unknown_person_and_missing_email(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    nobody = Person("850101145555", "x", None, "", None, "")
    unknown = await request_otp(client, api_keys.signer, nobody)
    assert unknown.status_code == 409 and unknown.json()["code"] == "credential_not_active"
    no_email = factory.person(email=None)
    answer = await request_otp(client, api_keys.signer, no_email)
    assert answer.status_code == 409 and answer.json()["code"] == "no_email_address"
    mobile = await request_otp(client, api_keys.signer, factory.person(), channel="mobile")
    assert mobile.status_code == 409 and mobile.json()["code"] == "no_active_device"


async def test_the_stored_otp_is_only_a_mac(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    with runtime.sessions() as session:
        request = session.get(SigningRequest, created["id"])
        assert request is not None
        assert otp.encode() not in request.otp_mac and len(request.otp_mac) == 32


async def test_a_signature_reads_its_request_credential_and_person_once(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    created = (await request_otp(client, api_keys.signer, person)).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created["id"])
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", capture)
    try:
        signed = await submit(client, api_keys.signer, created["id"], otp, person.pin)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", capture)

    assert signed.status_code == 201, signed.text
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The API key, then request + credential + person in one join; nothing read twice.
    signer_reads = [s for s in reads if "FROM credentials" in s or "FROM users" in s]
    assert signer_reads == []
    assert sum("FROM signing_requests JOIN credentials" in " ".join(s.split()) for s in reads) == 1


async def test_the_request_and_its_signature_are_written_without_the_unit_of_work(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    """Both rows are Core inserts: the ORM's flush of one new object cost more than the
    INSERT itself (bench/RESULTS.md, session 6). They are still written, once."""
    with flushed_new_objects(runtime.sessions) as flushed:
        created = await request_otp(client, api_keys.signer, person)
        otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, created.json()["id"])
        signed = await submit(client, api_keys.signer, created.json()["id"], otp, person.pin)

    assert created.status_code == 201 and signed.status_code == 201, signed.text
    assert [o for o in flushed if isinstance(o, SigningRequest | Signature)] == []
    with runtime.sessions() as session:
        request = session.get(SigningRequest, created.json()["id"])
        assert request is not None and request.status == "signed"
        stored = session.scalars(select(Signature).where(Signature.request_id == request.id))
        assert [base64.b64encode(s.signature).decode() for s in stored] == [
            signed.json()["signature"]
        ]


@pytest.mark.parametrize("hidden", ["\u202e", "\u2069", "\u200e", "\u200b", "\ufeff"])
async def test_a_document_name_cannot_be_disguised(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, hidden: str
) -> None:
    response = await api.request_otp(
        client, api_keys.signer, person, document_name=f"Baucar PV-1{hidden}fdp.exe"
    )
    problem = api.assert_problem(response, 422, "validation_error")
    assert [error["pointer"] for error in problem["errors"]] == ["/document_name"]
    assert "direction-changing" in problem["detail"]


async def test_a_tamil_document_name_with_a_zero_width_joiner_is_kept(
    client: httpx.AsyncClient, api_keys: Keys, person: Person
) -> None:
    name = "ஸ்ரீ\u200dநிவாசன் பற்றுச்சீட்டு"
    response = await api.request_otp(client, api_keys.signer, person, document_name=name)
    assert response.status_code == 201, response.text
