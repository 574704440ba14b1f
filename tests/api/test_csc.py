"""The CSC API over HTTP: the same flow as the native one, its refusals in the CSC error shape."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asn1crypto import algos
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from sqlalchemy import select

from app.clock import FrozenClock
from app.models import AuditEvent, Credential, Signature, SigningRequest, User
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.factories import Factory, Person
from tests.helpers import queued_otp

SHA256 = "2.16.840.1.101.3.4.2.1"
SHA384 = "2.16.840.1.101.3.4.2.2"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
RSA_SHA256 = "1.2.840.113549.1.1.11"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
WRONG_PIN = "902847"
DOCUMENT_NAME = "Baucar Bayaran PV-2026-000123"


def digest_b64(text: str = "signed attributes", algorithm: str = "sha256") -> str:
    return base64.b64encode(hashlib.new(algorithm, text.encode()).digest()).decode()


def wrong(otp: str) -> str:
    return f"{(int(otp) + 1) % 1_000_000:06d}"


def pss_params(salt_length: int, hash_name: str = "sha256", mgf_hash: str | None = None) -> str:
    params = algos.RSASSAPSSParams(
        {
            "hash_algorithm": {"algorithm": hash_name},
            "mask_gen_algorithm": {
                "algorithm": "mgf1",
                "parameters": {"algorithm": mgf_hash or hash_name},
            },
            "salt_length": salt_length,
        }
    )
    return base64.b64encode(params.dump()).decode()


@dataclass
class Csc:
    """A CSC client of one signer, on one API version, speaking v1 or v2 member names."""

    client: httpx.AsyncClient
    runtime: Runtime
    key: str
    version: str = "v1"
    spelling: str = "v1"

    async def post(self, method: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            f"/csc/{self.version}/{method}", json=body, headers=bearer(self.key)
        )

    def _hash_members(self, hash_b64: str, algorithm_oid: str | None) -> dict[str, Any]:
        if self.spelling == "v2":
            members: dict[str, Any] = {"hashes": [hash_b64]}
            if algorithm_oid:
                members["hashAlgorithmOID"] = algorithm_oid
        else:
            members = {"hash": [hash_b64]}
            if algorithm_oid:
                members["hashAlgo"] = algorithm_oid
        return members

    async def send_otp(
        self, person: Person, hash_b64: str, algorithm_oid: str = SHA256, **extra: Any
    ) -> httpx.Response:
        body = {
            "credentialID": person.credential_id,
            "description": DOCUMENT_NAME,
            **self._hash_members(hash_b64, algorithm_oid),
            **extra,
        }
        return await self.post("credentials/sendOTP", body)

    def otp(self, person: Person) -> str:
        """The OTP of the person's newest request, read from the queued e-mail."""
        with self.runtime.sessions() as session:
            request_id = session.scalars(
                select(SigningRequest.id).where(
                    SigningRequest.credential_id == person.credential_id,
                    SigningRequest.status == "pending",
                )
            ).one_or_none()
        assert request_id is not None
        return queued_otp(self.runtime.sessions, self.runtime.keys.outbox_seal, request_id)

    async def authorize(
        self, person: Person, hash_b64: str, otp: str, pin: str | None = None, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "credentialID": person.credential_id,
            "numSignatures": 1,
            **self._hash_members(hash_b64, None),
        }
        if self.spelling == "v2":
            body["authData"] = [
                {"id": "PIN", "value": pin or person.pin},
                {"id": "OTP", "value": otp},
            ]
        else:
            body.update(PIN=pin or person.pin, OTP=otp)
        body.update(extra)
        return await self.post("credentials/authorize", body)

    async def sad(self, person: Person, hash_b64: str, algorithm_oid: str = SHA256) -> str:
        sent = await self.send_otp(person, hash_b64, algorithm_oid)
        assert sent.status_code == 204, sent.text
        authorized = await self.authorize(person, hash_b64, self.otp(person))
        assert authorized.status_code == 200, authorized.text
        return str(authorized.json()["SAD"])

    async def sign_hash(
        self,
        person: Person,
        sad: str,
        hash_b64: str,
        sign_algo: str = ECDSA_SHA256,
        algorithm_oid: str | None = SHA256,
        **extra: Any,
    ) -> httpx.Response:
        body = {
            "credentialID": person.credential_id,
            "SAD": sad,
            "signAlgo": sign_algo,
            **self._hash_members(hash_b64, algorithm_oid),
            **extra,
        }
        return await self.post("signatures/signHash", body)


@pytest.fixture
def csc(client: httpx.AsyncClient, runtime: Runtime, api_keys: Keys) -> Csc:
    return Csc(client, runtime, api_keys.signer)


@pytest.fixture
def rsa_person(factory: Factory) -> Person:
    return factory.person(key_algorithm="rsa-2048", email="muthu@mof.gov.my")


def certificate_of(runtime: Runtime, person: Person) -> x509.Certificate:
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.certificate_pem is not None
        return x509.load_pem_x509_certificate(credential.certificate_pem.encode())


def assert_csc_error(response: httpx.Response, error: str, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    return str(body["error_description"])


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_info_needs_no_key(client: httpx.AsyncClient, version: str) -> None:
    answer = await client.post(f"/csc/{version}/info", json={})
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert info["specs"] == {"v1": "1.0.4.0", "v2": "2.0.0.2"}[version]
    assert "signatures/signHash" in info["methods"]
    assert "credentials/sendOTP" in info["methods"]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_info_refuses_a_body_that_is_not_an_object_as_documented(
    client: httpx.AsyncClient, version: str
) -> None:
    """Found by schemathesis: the 400 was answered but missing from openapi.yaml."""
    answer = await client.post(f"/csc/{version}/info", json=[None, None])
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"][f"/csc/{version}/info"]["post"]["responses"]
    assert responses["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CscError"
    }


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_credentials_list_by_mykad(
    csc: Csc, person: Person, factory: Factory, version: str
) -> None:
    csc.version = version
    dashed = f"{person.mykad[:6]}-{person.mykad[6:8]}-{person.mykad[8:]}"
    listed = await csc.post("credentials/list", {"userID": dashed, "credentialInfo": True})
    assert listed.status_code == 200, listed.text
    assert listed.json()["credentialIDs"] == [person.credential_id]
    if version == "v2":
        (info,) = listed.json()["credentialInfos"]
        assert info["credentialID"] == person.credential_id
        assert info["SCAL"] == "2"

    unknown = await csc.post("credentials/list", {"userID": "991231145555"})
    assert unknown.json()["credentialIDs"] == []
    without = factory.person(roaming=False)
    none = await csc.post("credentials/list", {"userID": without.mykad})
    assert none.json()["credentialIDs"] == []
    malformed = await csc.post("credentials/list", {"userID": "12345"})
    assert "userID" in assert_csc_error(malformed, "invalid_request")


async def test_credentials_info_v1_describes_key_chain_and_authorization(
    csc: Csc, person: Person, runtime: Runtime
) -> None:
    answer = await csc.post(
        "credentials/info",
        {"credentialID": person.credential_id, "certificates": "chain", "certInfo": True},
    )
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert info["key"]["status"] == "enabled"
    assert ECDSA_SHA256 in info["key"]["algo"]
    assert "1.2.840.10045.4.3.4" in info["key"]["algo"]  # ecdsa-with-SHA512
    assert info["key"]["len"] == 256
    assert info["key"]["curve"] == "1.2.840.10045.3.1.7"
    certificates = [
        x509.load_der_x509_certificate(base64.b64decode(c)) for c in info["cert"]["certificates"]
    ]
    assert certificates[0] == certificate_of(runtime, person)  # the signer's first
    assert len(certificates) == 3
    assert certificates[1].subject == certificates[0].issuer
    assert certificates[2].subject == certificates[1].issuer == certificates[2].issuer
    assert info["cert"]["status"] == "valid"
    assert info["cert"]["serialNumber"] == format(certificates[0].serial_number, "X")
    assert len(info["cert"]["validTo"]) == 15 and info["cert"]["validTo"].endswith("Z")
    assert info["authMode"] == "explicit"
    assert info["PIN"]["presence"] == "true" and info["OTP"]["presence"] == "true"
    assert info["SCAL"] == "2"
    assert info["multisign"] == 1

    single = (await csc.post("credentials/info", {"credentialID": person.credential_id})).json()
    assert len(single["cert"]["certificates"]) == 1  # the CSC default is "single"


async def test_credentials_info_v2_and_rsa_algorithms(csc: Csc, rsa_person: Person) -> None:
    csc.version = "v2"
    info = (
        await csc.post(
            "credentials/info", {"credentialID": rsa_person.credential_id, "unknown": {"x": 1}}
        )
    ).json()
    assert {RSA_ENCRYPTION, RSA_SHA256, RSASSA_PSS} <= set(info["key"]["algo"])
    assert info["key"]["len"] == 2048 and "curve" not in info["key"]
    assert info["auth"]["mode"] == "explicit"
    assert {o["id"] for o in info["auth"]["objects"]} == {"PIN", "OTP"}
    assert "authMode" not in info


async def test_unknown_credential_is_an_invalid_request(csc: Csc) -> None:
    answer = await csc.post("credentials/info", {"credentialID": "no-such-credential"})
    assert assert_csc_error(answer, "invalid_request") == "unknown credentialID"


async def test_keys_and_roles(client: httpx.AsyncClient, api_keys: Keys, person: Person) -> None:
    body = {"credentialID": person.credential_id}
    missing = await client.post("/csc/v1/credentials/info", json=body)
    assert_csc_error(missing, "invalid_token", 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    bad = await client.post("/csc/v2/credentials/info", json=body, headers=bearer("rsk_nope"))
    assert_csc_error(bad, "invalid_token", 401)
    portal = await client.post(
        "/csc/v1/credentials/info", json=body, headers=bearer(api_keys.portal)
    )
    assert_csc_error(portal, "access_denied", 403)
    # The native API keeps its problem documents.
    native = await client.get("/v1/signing-requests/x")
    assert native.headers["content-type"] == "application/problem+json"


# -- the flow ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "spelling"), [("v1", "v1"), ("v1", "v2"), ("v2", "v1"), ("v2", "v2")]
)
async def test_send_otp_authorize_sign_hash_with_ecdsa(
    csc: Csc, person: Person, runtime: Runtime, version: str, spelling: str
) -> None:
    csc.version, csc.spelling = version, spelling
    hash_b64 = digest_b64(f"attributes {version} {spelling}")
    sent = await csc.send_otp(person, hash_b64, clientData="ignored", lang="ms")
    assert sent.status_code == 204, sent.text
    assert sent.content == b""
    authorized = await csc.authorize(person, hash_b64, csc.otp(person))
    assert authorized.status_code == 200, authorized.text
    grant = authorized.json()
    assert set(grant) == {"SAD", "expiresIn"}
    assert 0 < grant["expiresIn"] <= 60

    signed = await csc.sign_hash(person, grant["SAD"], hash_b64)
    assert signed.status_code == 200, signed.text
    (signature_b64,) = signed.json()["signatures"]
    signature = base64.b64decode(signature_b64, validate=True)
    public_key = certificate_of(runtime, person).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(
        signature, base64.b64decode(hash_b64), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )

    with runtime.sessions() as session:
        request = session.scalars(select(SigningRequest)).one()
        assert request.status == "signed"
        assert request.signature_format == "raw"
        assert request.document_name == DOCUMENT_NAME
        assert request.document_hash == base64.b64decode(hash_b64).hex()
        row = session.scalars(select(Signature)).one()
        assert row.request_id == request.id and row.signature == signature
        assert row.signature_format == "raw"
        assert row.signature_algorithm == "ecdsa-with-SHA256"
        actions = [e.action for e in session.scalars(select(AuditEvent))]
        assert {"otp.issued", "sad.issued", "signature.created"} <= set(actions)
        # Only a MAC of the SAD is kept, never the SAD nor its secret part.
        assert request.sad_mac is not None and len(request.sad_mac) == 32
        assert grant["SAD"].split(".")[1].encode() not in request.sad_mac


async def test_rsa_pkcs1_rsa_encryption_and_pss(
    csc: Csc, rsa_person: Person, runtime: Runtime
) -> None:
    runtime.settings.otps_per_signer_person_per_minute = 5  # four OTPs for one person at once
    public_key = certificate_of(runtime, rsa_person).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    largest_salt = 2048 // 8 - 32 - 2
    cases: list[tuple[str, dict[str, Any], padding.AsymmetricPadding, str]] = [
        (RSA_SHA256, {}, padding.PKCS1v15(), "sha256WithRSAEncryption"),
        (RSA_ENCRYPTION, {}, padding.PKCS1v15(), "sha256WithRSAEncryption"),
        (
            RSASSA_PSS,
            {"signAlgoParams": pss_params(32)},
            padding.PSS(padding.MGF1(hashes.SHA256()), 32),
            "RSASSA-PSS-SHA256",
        ),
        (
            RSASSA_PSS,
            {"signAlgoParams": pss_params(largest_salt)},
            padding.PSS(padding.MGF1(hashes.SHA256()), largest_salt),
            "RSASSA-PSS-SHA256",
        ),
    ]
    for index, (sign_algo, extra, expected_padding, name) in enumerate(cases):
        hash_b64 = digest_b64(f"rsa case {index}")
        sad = await csc.sad(rsa_person, hash_b64)
        signed = await csc.sign_hash(rsa_person, sad, hash_b64, sign_algo, **extra)
        assert signed.status_code == 200, signed.text
        signature = base64.b64decode(signed.json()["signatures"][0])
        public_key.verify(
            signature,
            base64.b64decode(hash_b64),
            expected_padding,
            utils.Prehashed(hashes.SHA256()),
        )
        with runtime.sessions() as session:
            row = session.scalars(select(Signature).where(Signature.signature == signature)).one()
            assert row.signature_algorithm == name


async def test_sha384_hash(csc: Csc, person: Person, runtime: Runtime) -> None:
    hash_b64 = digest_b64("sha384 attributes", "sha384")
    sad = await csc.sad(person, hash_b64, SHA384)
    signed = await csc.sign_hash(person, sad, hash_b64, "1.2.840.10045.4.3.3", SHA384)
    assert signed.status_code == 200, signed.text
    public_key = certificate_of(runtime, person).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(
        base64.b64decode(signed.json()["signatures"][0]),
        base64.b64decode(hash_b64),
        ec.ECDSA(utils.Prehashed(hashes.SHA384())),
    )


# -- refusals ----------------------------------------------------------------------------------


async def test_send_otp_needs_exactly_one_hash_its_algorithm_and_a_description(
    csc: Csc, person: Person
) -> None:
    base = {"credentialID": person.credential_id, "hashAlgo": SHA256, "description": "PV-1"}
    without = await csc.post("credentials/sendOTP", base)
    assert "exactly one base64 hash" in assert_csc_error(without, "invalid_request")
    two = await csc.post(
        "credentials/sendOTP", {**base, "hash": [digest_b64("a"), digest_b64("b")]}
    )
    assert_csc_error(two, "invalid_request")
    no_algorithm = await csc.post(
        "credentials/sendOTP", {**base, "hashAlgo": None, "hash": [digest_b64()]}
    )
    assert "hashAlgo" in assert_csc_error(no_algorithm, "invalid_request")
    sha1 = await csc.send_otp(person, digest_b64(), "1.3.14.3.2.26")
    assert "not supported" in assert_csc_error(sha1, "invalid_request")
    short = await csc.send_otp(person, digest_b64(), SHA384)
    assert "wrong length" in assert_csc_error(short, "invalid_request")
    hex_hash = await csc.send_otp(person, hashlib.sha256(b"x").hexdigest())
    assert_csc_error(hex_hash, "invalid_request")
    nameless = await csc.send_otp(person, digest_b64(), description=None)
    assert "description" in assert_csc_error(nameless, "invalid_request")
    control = await csc.send_otp(person, digest_b64(), description="PV\n1")
    assert_csc_error(control, "invalid_request")
    for hidden in ("\u202e", "\u2067", "\u200b", "\ufeff"):
        disguised = await csc.send_otp(person, digest_b64(), description=f"PV-1{hidden}fdp.exe")
        assert "direction-changing" in assert_csc_error(disguised, "invalid_request")
    not_json = await csc.client.post(
        "/csc/v1/credentials/sendOTP",
        content=b"{not json",
        headers={**bearer(csc.key), "Content-Type": "application/json"},
    )
    assert "not valid JSON" in assert_csc_error(not_json, "invalid_request")


async def test_pending_otp_and_inactive_credential(
    csc: Csc, person: Person, factory: Factory, runtime: Runtime
) -> None:
    hash_b64 = digest_b64()
    assert (await csc.send_otp(person, hash_b64)).status_code == 204
    again = await csc.send_otp(person, hash_b64)
    assert "already pending" in assert_csc_error(again, "invalid_request")

    with runtime.sessions.begin() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None
        credential.status = "revoked"
    revoked = await csc.send_otp(person, digest_b64("other"))
    assert "no active roaming credential" in assert_csc_error(revoked, "invalid_request")


async def test_wrong_otp_and_wrong_pin_are_both_invalid_otp_and_counted(
    csc: Csc, person: Person, runtime: Runtime
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    wrong_otp = await csc.authorize(person, hash_b64, wrong(otp))
    wrong_pin = await csc.authorize(person, hash_b64, otp, pin=WRONG_PIN)
    first = assert_csc_error(wrong_otp, "invalid_otp")
    second = assert_csc_error(wrong_pin, "invalid_otp")
    assert first == "the OTP or the PIN is not correct (2 attempts remaining)"
    assert second == "the OTP or the PIN is not correct (1 attempts remaining)"
    with runtime.sessions() as session:  # the refusals were committed
        request = session.scalars(select(SigningRequest)).one()
        assert request.attempts == 2
    last = await csc.authorize(person, hash_b64, wrong(otp))
    assert "0 attempts remaining" in assert_csc_error(last, "invalid_otp")
    locked = await csc.authorize(person, hash_b64, otp)
    assert "too many failed attempts" in assert_csc_error(locked, "invalid_request")


async def test_authorize_counts_a_wrong_pin_towards_the_lock_only_with_the_right_otp(
    csc: Csc, person: Person, runtime: Runtime
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    for pin in (WRONG_PIN, WRONG_PIN):
        assert_csc_error(await csc.authorize(person, hash_b64, wrong(otp), pin=pin), "invalid_otp")
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.pin_failures == 0
    assert_csc_error(await csc.authorize(person, hash_b64, otp, pin=WRONG_PIN), "invalid_otp")
    with runtime.sessions() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None and credential.pin_failures == 1


async def test_malformed_factors_are_not_counted(
    csc: Csc, person: Person, runtime: Runtime
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    short_pin = await csc.authorize(person, hash_b64, otp, pin="12")
    assert "pin must be" in assert_csc_error(short_pin, "invalid_request")
    no_factors = await csc.post(
        "credentials/authorize",
        {"credentialID": person.credential_id, "hash": [hash_b64]},
    )
    assert "OTP and the PIN" in assert_csc_error(no_factors, "invalid_request")
    two_signatures = await csc.authorize(person, hash_b64, otp, numSignatures=2)
    assert "numSignatures" in assert_csc_error(two_signatures, "invalid_request")
    with runtime.sessions() as session:
        assert session.scalars(select(SigningRequest.attempts)).one() == 0


async def test_authorize_takes_only_the_hash_the_otp_was_sent_for(
    csc: Csc, person: Person, api_keys: Keys
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    other = await csc.authorize(person, digest_b64("another"), otp)
    assert "sendOTP" in assert_csc_error(other, "invalid_request")
    foreign = Csc(csc.client, csc.runtime, api_keys.other_signer)
    stolen = await foreign.authorize(person, hash_b64, otp)
    assert "sendOTP" in assert_csc_error(stolen, "invalid_request")
    assert (await csc.authorize(person, hash_b64, otp)).status_code == 200
    # The OTP is spent on the SAD: neither authorize nor the native signature takes it again.
    twice = await csc.authorize(person, hash_b64, otp)
    assert "already exchanged for a SAD" in assert_csc_error(twice, "invalid_request")


async def test_expired_otp(csc: Csc, person: Person, clock: FrozenClock) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    clock.advance(121)
    late = await csc.authorize(person, hash_b64, otp)
    assert "expired" in assert_csc_error(late, "invalid_request")


async def test_locked_credential_and_held_person(
    csc: Csc, person: Person, runtime: Runtime, clock: FrozenClock
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    with runtime.sessions.begin() as session:
        user = session.get(User, person.user_id)
        assert user is not None
        user.signing_held_until = clock.now().replace(minute=5)
    held = await csc.authorize(person, hash_b64, otp)
    assert_csc_error(held, "rate_limited", 429)
    assert int(held.headers["Retry-After"]) == 300

    with runtime.sessions.begin() as session:
        credential = session.get(Credential, person.credential_id)
        assert credential is not None
        credential.status = "locked"
    locked = await csc.authorize(person, hash_b64, otp)
    assert "locked" in assert_csc_error(locked, "invalid_request")
    info = (await csc.post("credentials/info", {"credentialID": person.credential_id})).json()
    assert info["key"]["status"] == "disabled"


async def test_sad_is_bound_to_hash_credential_and_caller(
    csc: Csc, person: Person, factory: Factory, api_keys: Keys
) -> None:
    hash_b64 = digest_b64()
    sad = await csc.sad(person, hash_b64)

    other_hash = await csc.sign_hash(person, sad, digest_b64("another document"))
    assert "this hash" in assert_csc_error(other_hash, "invalid_request")
    someone = factory.person(email="muthu@mof.gov.my")
    other_credential = await csc.sign_hash(someone, sad, hash_b64)
    assert "credentialID" in assert_csc_error(other_credential, "invalid_request")
    foreign = Csc(csc.client, csc.runtime, api_keys.other_signer)
    stolen = await foreign.sign_hash(person, sad, hash_b64)
    assert assert_csc_error(stolen, "invalid_request") == "the SAD is not valid"
    request_id, _, secret = sad.partition(".")
    forged = await csc.sign_hash(person, f"{request_id}.{secret[:-2]}AA", hash_b64)
    assert assert_csc_error(forged, "invalid_request") == "the SAD is not valid"
    garbage = await csc.sign_hash(person, "not-a-sad", hash_b64)
    assert assert_csc_error(garbage, "invalid_request") == "the SAD is not valid"

    # None of these burned it: its owner still signs with it, once.
    signed = await csc.sign_hash(person, sad, hash_b64)
    assert signed.status_code == 200, signed.text
    reused = await csc.sign_hash(person, sad, hash_b64)
    assert assert_csc_error(reused, "invalid_request") == "the SAD was already used"


async def test_expired_sad(csc: Csc, person: Person, clock: FrozenClock, runtime: Runtime) -> None:
    hash_b64 = digest_b64()
    sad = await csc.sad(person, hash_b64)
    clock.advance(60)
    expired = await csc.sign_hash(person, sad, hash_b64)
    assert "expired" in assert_csc_error(expired, "invalid_request")
    clock.advance(1)
    still = await csc.sign_hash(person, sad, hash_b64)
    assert "expired" in assert_csc_error(still, "invalid_request")
    with runtime.sessions() as session:
        assert session.scalars(select(Signature)).first() is None


async def test_sad_outlives_the_otp_window_but_not_its_own(
    csc: Csc, person: Person, clock: FrozenClock
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    clock.advance(110)
    sad = (await csc.authorize(person, hash_b64, otp)).json()["SAD"]
    clock.advance(40)  # past the OTP's 120 s, within the SAD's 60 s
    # The hash stays taken while the SAD lives: no second OTP for it meanwhile.
    pending = await csc.send_otp(person, hash_b64)
    assert "already pending" in assert_csc_error(pending, "invalid_request")
    signed = await csc.sign_hash(person, sad, hash_b64)
    assert signed.status_code == 200, signed.text


async def test_second_signature_is_refused_and_native_paths_respect_the_sad(
    csc: Csc, person: Person, runtime: Runtime, api_keys: Keys
) -> None:
    hash_b64 = digest_b64()
    await csc.send_otp(person, hash_b64)
    otp = csc.otp(person)
    sad = (await csc.authorize(person, hash_b64, otp)).json()["SAD"]
    with runtime.sessions() as session:
        request_id = session.scalars(select(SigningRequest.id)).one()
    native = await csc.client.post(
        f"/v1/signing-requests/{request_id}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(api_keys.signer),
    )
    assert native.status_code == 409
    assert native.json()["code"] == "otp_consumed"
    assert (await csc.sign_hash(person, sad, hash_b64)).status_code == 200
    second = await csc.sign_hash(person, sad, hash_b64)
    assert_csc_error(second, "invalid_request")
    fetched = await csc.client.get(
        f"/v1/signing-requests/{request_id}", headers=bearer(api_keys.signer)
    )
    assert fetched.json()["status"] == "signed"
    assert fetched.json()["signature"]["signature_format"] == "raw"
    with runtime.sessions() as session:
        assert len(session.scalars(select(Signature)).all()) == 1


async def test_unsupported_signature_algorithms_leave_the_sad_usable(
    csc: Csc, rsa_person: Person
) -> None:
    hash_b64 = digest_b64()
    sad = await csc.sad(rsa_person, hash_b64)
    refusals = [
        ({"sign_algo": ECDSA_SHA256}, "key is RSA"),
        ({"sign_algo": RSASSA_PSS}, "signAlgoParams"),
        ({"sign_algo": RSASSA_PSS, "signAlgoParams": pss_params(20, "sha1")}, "sha1"),
        ({"sign_algo": RSASSA_PSS, "signAlgoParams": pss_params(32, mgf_hash="sha512")}, "MGF1"),
        ({"sign_algo": RSASSA_PSS, "signAlgoParams": pss_params(223)}, "saltLength"),
        ({"sign_algo": RSASSA_PSS, "signAlgoParams": "bm90IERFUg=="}, "RSASSA-PSS-params"),
        ({"sign_algo": RSA_SHA256, "signAlgoParams": pss_params(32)}, "no signAlgoParams"),
        ({"sign_algo": RSA_ENCRYPTION, "algorithm_oid": None}, "hashAlgo is required"),
        ({"sign_algo": "1.2.840.113549.1.1.12"}, "implies sha384"),
        ({"sign_algo": "1.2.840.113549.1.1.5"}, "not supported"),
    ]
    for arguments, expected in refusals:
        answer = await csc.sign_hash(rsa_person, sad, hash_b64, **arguments)  # type: ignore[arg-type]
        assert expected in assert_csc_error(answer, "invalid_request"), arguments
    assert (await csc.sign_hash(rsa_person, sad, hash_b64, RSA_SHA256)).status_code == 200
