"""RFC 9421 verification of device requests, and the device rules, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.crypto.keys import SoftwareMacKey
from app.errors import DeviceNotEligible, SignatureRejected
from app.services.devices.activation_code import activation_code_mac
from app.services.devices.auth import (
    SignedRequest,
    VerifiedSignature,
    load_device_public_key,
    verify_signature,
)
from app.services.devices.eligibility import check_eligibility
from app.services.devices.messages import OtpMessage, associated_data
from tests.mobile_app import MobileApp

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SKEW = timedelta(seconds=60)
DEVICE_ID = "6f1c2a9e-3b7d-4c55-9a0e-2d8f6b1e4a77"
BASE = "https://roamsign.example"
# RFC 9530 section 2 (and RFC 9421 B.2): the body {"hello": "world"} and its digests.
RFC_BODY = b'{"hello": "world"}'
RFC_SHA256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
RFC_SHA512 = (
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+"
    "TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
)


@pytest.fixture
def app() -> MobileApp:
    return MobileApp(DEVICE_ID)


def as_received(request: httpx.Request, body: bytes | None = None) -> SignedRequest:
    return SignedRequest(
        method=request.method,
        url=str(request.url),
        headers=tuple(request.headers.multi_items()),
        body=request.content if body is None else body,
    )


def fetch(app: MobileApp, **sign: object) -> httpx.Request:
    request = httpx.Request("GET", f"{BASE}/v1/devices/{DEVICE_ID}/messages?wait=25")
    sign.setdefault("created", NOW)
    return app.sign(request, **sign)  # type: ignore[arg-type]


def verify(app: MobileApp, request: httpx.Request, body: bytes | None = None) -> VerifiedSignature:
    return verify_signature(as_received(request, body), DEVICE_ID, app.public_key_pem, NOW, SKEW)


def rejected(app: MobileApp, request: httpx.Request, words: str, body: bytes | None = None) -> None:
    with pytest.raises(SignatureRejected) as caught:
        verify(app, request, body)
    assert words in caught.value.detail


def test_a_good_signature_gives_created_and_nonce(app: MobileApp) -> None:
    verified = verify(app, fetch(app, nonce="nonce-0123456789abcdef"))
    assert verified == VerifiedSignature(created=NOW, nonce="nonce-0123456789abcdef")


def test_the_query_is_not_part_of_the_path(app: MobileApp) -> None:
    signed = fetch(app)
    moved = httpx.Request("GET", f"{BASE}/v1/devices/{DEVICE_ID}/messages", headers=signed.headers)
    assert verify(app, moved).nonce


def test_another_path_does_not_verify(app: MobileApp) -> None:
    signed = fetch(app)
    moved = httpx.Request("DELETE", f"{BASE}/v1/devices/{DEVICE_ID}", headers=signed.headers)
    rejected(app, moved, "does not verify")


@pytest.mark.parametrize(("seconds", "ok"), [(-60, True), (60, True), (-61, False), (61, False)])
def test_created_within_sixty_seconds_either_way(app: MobileApp, seconds: int, ok: bool) -> None:
    request = fetch(app, created=NOW + timedelta(seconds=seconds))
    if ok:
        assert verify(app, request).created == NOW + timedelta(seconds=seconds)
    else:
        rejected(app, request, "within 60 s")


def test_created_is_required(app: MobileApp) -> None:
    request = fetch(app)
    request.headers["Signature-Input"] = request.headers["Signature-Input"].replace(
        f";created={int(NOW.timestamp())}", ""
    )
    rejected(app, request, "created")


def test_a_past_expires_is_refused(app: MobileApp) -> None:
    request = httpx.Request("GET", f"{BASE}/v1/devices/{DEVICE_ID}/messages")
    from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

    HTTPMessageSigner(
        signature_algorithm=algorithms.ECDSA_P256_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={DEVICE_ID: app.private_key}),
    ).sign(
        request,
        key_id=DEVICE_ID,
        created=NOW,
        expires=NOW - timedelta(seconds=1),
        nonce="nonce-0123456789abcdef",
        covered_component_ids=("@method", "@path"),
    )
    rejected(app, request, "expired")


def test_the_keyid_must_be_the_device(app: MobileApp) -> None:
    rejected(app, fetch(app, key_id="someone-else"), "keyid")


def test_the_device_key_must_have_signed(app: MobileApp) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    rejected(app, fetch(app, private_key=other), "does not verify")


@pytest.mark.parametrize("nonce", [None, "", "0123456789abcde", "has a space in it!!"])
def test_a_nonce_of_sixteen_printable_characters_is_required(
    app: MobileApp, nonce: str | None
) -> None:
    if nonce == "":
        nonce = None
    rejected(app, fetch(app, nonce=nonce), "nonce")


def test_a_body_with_the_rfc_9530_digests(app: MobileApp) -> None:
    for digest in (RFC_SHA256, RFC_SHA512):
        request = httpx.Request(
            "DELETE",
            f"{BASE}/v1/devices/{DEVICE_ID}",
            headers={"Content-Digest": digest, "Content-Type": "application/json"},
            content=RFC_BODY,
        )
        app.sign(
            request,
            created=NOW,
            components=("@method", "@path", "content-digest"),
            digest_body=False,
        )
        assert verify(app, request).nonce
        rejected(app, request, "Content-Digest does not match", body=RFC_BODY + b" ")


def test_a_body_whose_digest_is_not_signed(app: MobileApp) -> None:
    request = httpx.Request(
        "DELETE",
        f"{BASE}/v1/devices/{DEVICE_ID}",
        headers={"Content-Digest": RFC_SHA256},
        content=RFC_BODY,
    )
    app.sign(request, created=NOW, digest_body=False)
    rejected(app, request, "Content-Digest")


def test_a_body_without_a_digest(app: MobileApp) -> None:
    rejected(app, fetch(app), "Content-Digest", body=b"{}")


def test_garbled_signature_headers(app: MobileApp) -> None:
    request = fetch(app)
    request.headers["Signature-Input"] = "not a structured field ("
    rejected(app, request, "Signature-Input")


@pytest.mark.parametrize(
    ("platform", "os_version", "has_sim", "pointer"),
    [
        ("android", "7.1.2", True, "/os_version"),
        ("android", "4", True, "/os_version"),
        ("ios", "11.4.1", True, "/os_version"),
        ("android", "14", False, "/has_sim"),
        ("harmonyos", "4.0", False, "/has_sim"),
    ],
)
def test_ineligible(platform: str, os_version: str, has_sim: bool, pointer: str) -> None:
    with pytest.raises(DeviceNotEligible) as caught:
        check_eligibility(platform, os_version, has_sim)
    assert caught.value.extra["errors"][0]["pointer"] == pointer


@pytest.mark.parametrize(
    ("platform", "os_version"),
    [("android", "8"), ("android", "8.0.0"), ("ios", "12"), ("ios", "18.1"), ("harmonyos", "1")],
)
def test_eligible(platform: str, os_version: str) -> None:
    check_eligibility(platform, os_version, True)


def test_only_p256_public_keys() -> None:
    good = MobileApp().public_key_pem
    assert load_device_public_key(good).curve.name == "secp256r1"
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for bad in (ed, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "x" * 5000):
        with pytest.raises(ValueError, match="public_key"):
            load_device_public_key(bad)


def test_activation_code_macs_are_bound_to_their_device() -> None:
    key = SoftwareMacKey(b"k" * 32)
    assert activation_code_mac(key, "a", "123456") != activation_code_mac(key, "b", "123456")
    assert activation_code_mac(key, "a1", "23456") != activation_code_mac(key, "a", "123456")


def test_an_otp_message_round_trips_and_hides_its_code_in_repr() -> None:
    message = OtpMessage(
        request_id="r",
        otp="123456",
        document_name="Baucar Bayaran — PV-1",
        requesting_system="igfmas",
        hash_algorithm="sha256",
        document_fingerprint="ABCDEF01...23456789",
        issued_at=NOW,
        expires_at=NOW + timedelta(seconds=120),
    )
    assert OtpMessage.decode(message.encode()) == message
    assert "123456" not in repr(message)
    assert associated_data("d", "r") != associated_data("r", "d")
