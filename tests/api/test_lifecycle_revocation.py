"""Revocation, the CRL, the certificates' CDP and AIA, expiry and renewal, over HTTP."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
from cryptography import x509

from app.clock import FrozenClock
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import (
    NEW_PIN,
    expect_problem,
    mail,
    request_signature,
    set_pin,
    sign,
)
from tests.factories import Factory, Person
from tests.helpers import document_hash, queued_otp


async def revoke(
    client: httpx.AsyncClient, key: str, credential_id: str, reason: object = "keyCompromise"
) -> httpx.Response:
    return await client.post(
        f"/v1/credentials/{credential_id}/revocation",
        json={"reason": reason},
        headers=bearer(key),
    )


async def renew(
    client: httpx.AsyncClient, key: str, credential_id: str, **body: object
) -> httpx.Response:
    return await client.post(
        f"/v1/credentials/{credential_id}/renewal", json=body or None, headers=bearer(key)
    )


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_revocation_stops_signing_at_once_and_cancels_pending_requests(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    assert person.credential_id is not None
    signed = (await sign(client, api_keys.signer, runtime, person.mykad, person.pin)).json()
    pending = (await request_signature(client, api_keys.signer, person.mykad, "pending")).json()
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, pending["id"])

    revoked = await revoke(client, api_keys.jdn_admin, person.credential_id)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revocation_reason"] == "keyCompromise"
    assert revoked.json()["revoked_at"] == "2026-11-27T10:00:00Z"

    fetched = await client.get(
        f"/v1/signing-requests/{pending['id']}", headers=bearer(api_keys.signer)
    )
    assert fetched.json()["status"] == "cancelled"
    late = await client.post(
        f"/v1/signing-requests/{pending['id']}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(api_keys.signer),
    )
    expect_problem(late, 409, "otp_consumed")
    refused = await request_signature(client, api_keys.signer, person.mykad, "after")
    expect_problem(refused, 409, "credential_not_active")
    notice = mail(runtime, "aisyah@jdn.gov.my", "credential_revoked")
    assert "revoked" in notice.subject and "keyCompromise" in notice.text

    # A signature made before: valid, with the time it was made and the status now.
    verified = await client.post(
        "/v1/signatures/verification",
        json={"document_hash": document_hash("PV-2026-000123"), "signature": signed["signature"]},
        headers=bearer(api_keys.signer),
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["valid"] is True
    assert verified.json()["signed_at"] == signed["signed_at"]
    assert verified.json()["certificate_status"] == "revoked"
    assert verified.json()["revoked_at"] == "2026-11-27T10:00:00Z"


async def test_the_crl_lists_the_revoked_serial(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, tmp_path: Path
) -> None:
    assert person.credential_id is not None
    before = x509.load_der_x509_crl((await client.get("/v1/ca/crl")).content)
    assert len(before) == 0
    serial = (await revoke(client, api_keys.jdn_admin, person.credential_id, "superseded")).json()[
        "serial"
    ]
    crl = (await client.get("/v1/ca/crl")).content
    parsed = x509.load_der_x509_crl(crl)
    entry = parsed.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded
    (tmp_path / "ca.crl").write_bytes(crl)
    text = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "ca.crl"), "-noout", "-text")
    listed = [int(found, 16) for found in re.findall(r"Serial Number: ([0-9A-F]+)", text)]
    assert listed == [int(serial, 16)]
    assert "Superseded" in text


async def test_certificates_name_the_crl_and_the_ca_issuers(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, tmp_path: Path
) -> None:
    media = await client.get(
        f"/v1/users/{person.mykad}/credentials", headers=bearer(api_keys.jdn_admin)
    )
    pem = media.json()[0]["certificate"]
    certificate = x509.load_pem_x509_certificate(pem.encode())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [name.value for point in points for name in point.full_name or []] == [
        "http://127.0.0.1:8000/v1/ca/crl"
    ]
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    # Issue 17: caIssuers serves one DER certificate (RFC 5280 s.4.2.2.1), and OCSP answers.
    assert [(d.access_method, d.access_location.value) for d in access.value] == [
        (x509.AuthorityInformationAccessOID.CA_ISSUERS, "http://127.0.0.1:8000/v1/ca/issuer.cer"),
        (x509.AuthorityInformationAccessOID.OCSP, "http://127.0.0.1:8000/v1/ca/ocsp"),
    ]
    (tmp_path / "leaf.pem").write_text(pem)
    text = openssl("x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text")
    assert "X509v3 CRL Distribution Points" in text
    assert "URI:http://127.0.0.1:8000/v1/ca/crl" in text
    assert "Authority Information Access" in text
    assert "CA Issuers - URI:http://127.0.0.1:8000/v1/ca/issuer.cer" in text
    assert "OCSP - URI:http://127.0.0.1:8000/v1/ca/ocsp" in text


async def test_revocation_refusals(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, factory: Factory
) -> None:
    assert person.credential_id is not None
    for reason in ("compromised", "certificateHold", "removeFromCRL", "cACompromise", None):
        invalid = await revoke(client, api_keys.jdn_admin, person.credential_id, reason)
        expect_problem(invalid, 422, "validation_error")
    for role in ("portal", "agency_admin", "signer"):
        refused = await revoke(client, getattr(api_keys, role), person.credential_id)
        expect_problem(refused, 403, "forbidden")
    expect_problem(await revoke(client, api_keys.jdn_admin, "nope"), 404, "not_found")
    token_id = factory.record_medium(person.mykad, "TKN-5", factory.now().replace(year=2027))
    expect_problem(await revoke(client, api_keys.jdn_admin, token_id), 409, "conflict")
    assert (await revoke(client, api_keys.jdn_admin, person.credential_id)).status_code == 200
    twice = await revoke(client, api_keys.jdn_admin, person.credential_id, "unspecified")
    expect_problem(twice, 409, "conflict")


async def test_an_expired_certificate_cannot_sign_and_renewal_replaces_it(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    assert person.credential_id is not None
    clock.advance(days=730)
    # (The OTP request itself is still accepted: the signing service refuses at the signature.)
    expired = await sign(client, api_keys.signer, runtime, person.mykad, person.pin)
    expect_problem(expired, 409, "credential_not_active")
    listed = await client.get(
        f"/v1/credentials/{person.credential_id}", headers=bearer(api_keys.portal)
    )
    assert listed.json()["status"] == "expired"

    renewed = await renew(client, api_keys.jdn_admin, person.credential_id)
    assert renewed.status_code == 201, renewed.text
    new = renewed.json()
    assert new["status"] == "pending_pin" and new["replaces_credential_id"] == person.credential_id
    setup = mail(runtime, "aisyah@jdn.gov.my", "pin_setup")
    assert "renewed" in setup.subject
    activated = await set_pin(
        client, api_keys.portal, new["id"], new_pin=NEW_PIN, token=setup.token
    )
    assert activated.status_code == 200, activated.text
    signed = await sign(client, api_keys.signer, runtime, person.mykad, NEW_PIN)
    assert signed.status_code == 201, signed.text
    leaf = x509.load_pem_x509_certificate(signed.json()["certificate"].encode())
    assert format(leaf.serial_number, "x") == new["serial"]


async def test_renewal_keeps_the_old_credential_signing_until_the_new_pin(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    assert person.credential_id is not None
    runtime.settings.otps_per_signer_person_per_minute = 5  # four OTPs for one person in 70 s
    old_signature = (await sign(client, api_keys.signer, runtime, person.mykad, person.pin)).json()
    renewed = (
        await renew(client, api_keys.jdn_admin, person.credential_id, key_algorithm="rsa-3072")
    ).json()
    assert renewed["key_algorithm"] == "rsa-3072" and renewed["serial"] != old_signature
    twice = await renew(client, api_keys.jdn_admin, person.credential_id)
    expect_problem(twice, 409, "conflict")

    clock.advance(60)
    still = await sign(client, api_keys.signer, runtime, person.mykad, person.pin, "still old")
    assert still.status_code == 201, still.text
    pending = (await request_signature(client, api_keys.signer, person.mykad, "pending")).json()

    token = mail(runtime, "aisyah@jdn.gov.my", "pin_setup").token
    await set_pin(client, api_keys.portal, renewed["id"], new_pin=NEW_PIN, token=token)
    old = await client.get(
        f"/v1/credentials/{person.credential_id}", headers=bearer(api_keys.jdn_admin)
    )
    assert old.json()["status"] == "superseded"
    cancelled = await client.get(
        f"/v1/signing-requests/{pending['id']}", headers=bearer(api_keys.signer)
    )
    assert cancelled.json()["status"] == "cancelled"
    media = await client.get(
        f"/v1/users/{person.mykad}/credentials", headers=bearer(api_keys.portal)
    )
    assert sorted(c["status"] for c in media.json()) == ["active", "superseded"]

    # The old certificate's signatures stay good: it was superseded, not revoked.
    verified = await client.post(
        "/v1/signatures/verification",
        json={
            "document_hash": document_hash("PV-2026-000123"),
            "signature": old_signature["signature"],
        },
        headers=bearer(api_keys.signer),
    )
    assert verified.json()["valid"] is True and verified.json()["certificate_status"] == "good"
    # A superseded credential is not renewed again, nor its PIN reset.
    expect_problem(await renew(client, api_keys.jdn_admin, person.credential_id), 409, "conflict")
    reset = await client.post(
        f"/v1/credentials/{person.credential_id}/pin-reset", headers=bearer(api_keys.portal)
    )
    expect_problem(reset, 409, "credential_not_active")
    signed = await sign(client, api_keys.signer, runtime, person.mykad, NEW_PIN, "new key")
    assert signed.json()["signature_algorithm"] == "sha256WithRSAEncryption"


async def test_renewal_refusals(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, factory: Factory
) -> None:
    assert person.credential_id is not None
    for role in ("portal", "agency_admin", "signer"):
        refused = await renew(client, getattr(api_keys, role), person.credential_id)
        expect_problem(refused, 403, "forbidden")
    expect_problem(await renew(client, api_keys.jdn_admin, "nope"), 404, "not_found")
    bad = await renew(client, api_keys.jdn_admin, person.credential_id, key_algorithm="ed25519")
    expect_problem(bad, 422, "validation_error")
    await revoke(client, api_keys.jdn_admin, person.credential_id)
    expect_problem(await renew(client, api_keys.jdn_admin, person.credential_id), 409, "conflict")
