"""Signature time-stamps on roamsign's CMS signatures, and the RFC 3161 HTTP client that asks a
remote TSA for them: the stamped CMS still verifies (openssl, us), pyHanko validates the
stamp, and every way a TSA can fail is one typed error within the time bound."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)

from app.crypto.cades import (
    SIGNATURE_TIME_STAMP_OID,
    SignatureNotStampable,
    add_signature_timestamp,
    add_vouched_signature_timestamp,
    signature_timestamp_tokens,
)
from app.crypto.cms import build_detached_cms, verify_cms
from app.crypto.keystore import PrivateKey
from app.crypto.tsa import reply_to_query, timestamp_query
from app.crypto.tsa_client import TimestampUnavailable, request_timestamp
from app.crypto.tsa_token import TimestampTokenInvalid, read_timestamp_token
from tests.unit.ltv_pki import NOW, TSA_POLICY, Pki, make_pki, new_key, openssl, signer, write_pem

SIGNED_AT = NOW + timedelta(days=10)
STAMPED_AT = SIGNED_AT + timedelta(seconds=2)
DOCUMENT = b"Baucar Bayaran PV-2026-000123\n" * 40
Person = tuple[PrivateKey, x509.Certificate]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


class Tsa:
    """roamsign's TSA in-process: a key, its certificate, and the reply to a query."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.key: PrivateKey = new_key()
        self.certificate = pki.issue_tsa(self.key)
        self.serial = 0

    def reply(self, query: bytes) -> bytes:
        self.serial += 1
        return reply_to_query(
            query,
            now=STAMPED_AT,
            serial=self.serial,
            policy_oid=TSA_POLICY,
            tsa_cert=self.certificate,
            chain=[self.pki.issuing, self.pki.root],
            sign=signer(self.key),
        )

    def token(self, imprint: bytes) -> bytes:
        reply = tsp.TimeStampResp.load(self.reply(timestamp_query(imprint, "sha256", nonce=5)))
        return bytes(reply["time_stamp_token"].dump())


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def tsa(pki: Pki) -> Tsa:
    return Tsa(pki)


@pytest.fixture(scope="module")
def person(pki: Pki) -> Person:
    key = new_key()
    return key, pki.issue_person(key)


def signed_cms(pki: Pki, person: Person) -> bytes:
    key, certificate = person
    return build_detached_cms(
        digest=hashlib.sha256(DOCUMENT).digest(),
        hash_algorithm="sha256",
        certificate=certificate,
        chain=[pki.issuing, pki.root],
        signing_time=SIGNED_AT,
        sign=signer(key),
    )


def signer_info(der: bytes) -> cms.SignerInfo:
    [info] = cms.ContentInfo.load(der)["content"]["signer_infos"]
    return info


def test_the_token_covers_the_signature_value(pki: Pki, tsa: Tsa, person: Person):
    stamped = add_signature_timestamp(signed_cms(pki, person), tsa.token)
    info = signer_info(stamped)
    [attribute] = info["unsigned_attrs"]
    assert attribute["type"].dotted == SIGNATURE_TIME_STAMP_OID
    [token_der] = signature_timestamp_tokens(stamped)
    tst_info = cms.ContentInfo.load(token_der)["content"]["encap_content_info"]["content"].parsed
    imprint = tst_info["message_imprint"]
    assert imprint["hash_algorithm"]["algorithm"].native == "sha256"
    assert imprint["hashed_message"].native == hashlib.sha256(info["signature"].native).digest()
    token = read_timestamp_token(token_der)
    assert token.gen_time == STAMPED_AT
    assert token.tsa_certificate == tsa.certificate


def test_the_vouched_splice_writes_what_the_checked_path_writes(pki: Pki, tsa: Tsa, person: Person):
    original = signed_cms(pki, person)
    token = tsa.token(hashlib.sha256(signer_info(original)["signature"].native).digest())
    vouched = add_vouched_signature_timestamp(original, lambda _imprint: token)
    assert vouched == add_signature_timestamp(original, lambda _imprint: token)
    # A CMS already stamped takes the checked path: a second token is added beside the first.
    twice = add_vouched_signature_timestamp(vouched, lambda _imprint: token)
    assert signature_timestamp_tokens(twice) == [token, token]


def test_the_signed_parts_are_carried_over_byte_for_byte(pki: Pki, tsa: Tsa, person: Person):
    original = signed_cms(pki, person)
    stamped = add_signature_timestamp(original, tsa.token)
    before, after = signer_info(original), signer_info(stamped)
    for field in ("sid", "digest_algorithm", "signed_attrs", "signature_algorithm", "signature"):
        assert after[field].dump() == before[field].dump()
    signed_before = cms.ContentInfo.load(original)["content"]
    signed_after = cms.ContentInfo.load(stamped)["content"]
    for field in ("digest_algorithms", "encap_content_info", "certificates"):
        assert signed_after[field].dump() == signed_before[field].dump()
    verification = verify_cms(
        stamped,
        hashlib.sha256(DOCUMENT).digest(),
        "sha256",
        roots=[pki.root],
        intermediates=[pki.issuing],
    )
    assert verification.valid, verification.reason


@needs_openssl
def test_openssl_still_verifies_the_stamped_cms(pki: Pki, tsa: Tsa, person: Person, tmp_path: Path):
    stamped = add_signature_timestamp(signed_cms(pki, person), tsa.token)
    (tmp_path / "sig.der").write_bytes(stamped)
    (tmp_path / "doc.bin").write_bytes(DOCUMENT)
    result = openssl(
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        tmp_path / "sig.der",
        "-content",
        tmp_path / "doc.bin",
        "-CAfile",
        write_pem(tmp_path / "root.pem", pki.root),
        "-certfile",
        write_pem(tmp_path / "issuing.pem", pki.issuing),
        "-attime",
        str(int(SIGNED_AT.timestamp())),
        "-out",
        tmp_path / "out.bin",
    )
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


@needs_openssl
def test_openssl_verifies_the_embedded_token_against_the_signature(
    pki: Pki, tsa: Tsa, person: Person, tmp_path: Path
):
    stamped = add_signature_timestamp(signed_cms(pki, person), tsa.token)
    [token] = signature_timestamp_tokens(stamped)
    (tmp_path / "token.der").write_bytes(token)
    (tmp_path / "signature.bin").write_bytes(signer_info(stamped)["signature"].native)
    result = openssl(
        "ts",
        "-verify",
        "-token_in",
        "-in",
        tmp_path / "token.der",
        "-data",
        tmp_path / "signature.bin",
        "-CAfile",
        write_pem(tmp_path / "root.pem", pki.root),
        "-untrusted",
        write_pem(tmp_path / "issuing.pem", pki.issuing),
        "-attime",
        str(int(STAMPED_AT.timestamp())),
    )
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


async def test_pyhanko_validates_the_signature_and_its_time_stamp(
    pki: Pki, tsa: Tsa, person: Person
):
    stamped = add_signature_timestamp(signed_cms(pki, person), tsa.token)
    policy = CertRevTrustPolicy(
        RevocationCheckingPolicy(
            ee_certificate_rule=RevocationCheckingRule.NO_CHECK,
            intermediate_ca_cert_rule=RevocationCheckingRule.NO_CHECK,
        )
    )
    root = asn1_x509.Certificate.load(pki.root.public_bytes(serialization.Encoding.DER))

    def context() -> ValidationContext:
        return ValidationContext(
            trust_roots=[root],
            moment=STAMPED_AT + timedelta(minutes=1),
            allow_fetching=False,
            revinfo_policy=policy,
        )

    status = await async_validate_detached_cms(
        DOCUMENT,
        cms.ContentInfo.load(stamped)["content"],
        signer_validation_context=context(),
        ts_validation_context=context(),
    )
    assert status.intact and status.valid and status.bottom_line, status.pretty_print_details()
    assert status.timestamp_validity is not None
    assert status.timestamp_validity.intact and status.timestamp_validity.valid
    assert status.timestamp_validity.timestamp == STAMPED_AT


def test_a_token_over_another_imprint_is_refused(pki: Pki, tsa: Tsa, person: Person):
    with pytest.raises(SignatureNotStampable, match="another imprint"):
        add_signature_timestamp(signed_cms(pki, person), lambda _: tsa.token(bytes(32)))


def test_a_token_signed_by_a_certificate_not_for_time_stamping_is_refused(
    pki: Pki, tsa: Tsa, person: Person
):
    key, certificate = person
    # The person's own key and certificate answering as a TSA.
    reply = reply_to_query(
        timestamp_query(
            hashlib.sha256(signer_info(signed_cms(pki, person))["signature"].native).digest(),
            "sha256",
            nonce=1,
        ),
        now=STAMPED_AT,
        serial=1,
        policy_oid=TSA_POLICY,
        tsa_cert=certificate,
        chain=[],
        sign=signer(key),
    )
    token = bytes(tsp.TimeStampResp.load(reply)["time_stamp_token"].dump())
    with pytest.raises(TimestampTokenInvalid, match="extended key usage"):
        read_timestamp_token(token)


@pytest.mark.parametrize("garbage", [b"", b"not a cms", b"\x30\x03\x02\x01\x01"])
def test_garbage_is_not_stampable(tsa: Tsa, garbage: bytes):
    with pytest.raises(SignatureNotStampable):
        add_signature_timestamp(garbage, tsa.token)


def test_a_tampered_token_is_invalid(tsa: Tsa):
    token = bytearray(tsa.token(bytes(32)))
    token[-5] ^= 0x01  # inside the signature value
    with pytest.raises(TimestampTokenInvalid):
        read_timestamp_token(bytes(token))


# --- the HTTP client, against a real HTTP server on localhost ---

Handler = Callable[[bytes], tuple[int, bytes]]
Serve = Callable[[Handler], str]


@pytest.fixture
def tsa_server() -> Iterator[Serve]:
    servers: list[ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class RequestHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Type"] == "application/timestamp-query"
                status, reply = handle(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1/tsa"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_client_gets_a_token_for_its_digest(tsa: Tsa, tsa_server: Serve):
    url = tsa_server(lambda body: (200, tsa.reply(body)))
    digest = hashlib.sha256(b"signature value").digest()
    token = read_timestamp_token(request_timestamp(url, digest, timeout_seconds=5))
    assert token.hashed_message == digest and token.gen_time == STAMPED_AT


def test_client_stamps_a_cms_through_http(pki: Pki, tsa: Tsa, person: Person, tsa_server):
    url = tsa_server(lambda body: (200, tsa.reply(body)))
    with httpx.Client() as client:
        stamped = add_signature_timestamp(
            signed_cms(pki, person),
            lambda imprint: request_timestamp(url, imprint, timeout_seconds=5, client=client),
        )
    assert len(signature_timestamp_tokens(stamped)) == 1


def test_client_gives_up_within_the_bound(tsa: Tsa, tsa_server: Serve):
    release = threading.Event()

    def hang(body: bytes) -> tuple[int, bytes]:
        release.wait(10)
        return 200, tsa.reply(body)

    url = tsa_server(hang)
    started = time.monotonic()
    with pytest.raises(TimestampUnavailable, match="in time"):
        request_timestamp(url, bytes(32), timeout_seconds=0.3)
    assert time.monotonic() - started < 2
    release.set()


def test_client_reports_an_unreachable_tsa():
    with pytest.raises(TimestampUnavailable, match="unreachable"):
        request_timestamp("http://127.0.0.1:9/v1/tsa", bytes(32), timeout_seconds=1)


@pytest.mark.parametrize(
    ("handle", "reason"),
    [
        (lambda tsa, body: (503, b"busy"), "HTTP 503"),
        (lambda tsa, body: (200, b"<html>hello</html>"), "not a TimeStampResp"),
        (
            lambda tsa, body: (200, tsa.reply(timestamp_query(bytes(32), "sha256", nonce=99))),
            "not for this query",
        ),
        (lambda tsa, body: (200, tsa.reply(body[:-4])), "refused"),
    ],
    ids=["http-error", "not-a-reply", "replayed-token", "rejection"],
)
def test_client_errors_are_typed(
    tsa: Tsa, tsa_server: Serve, handle: Callable[[Tsa, bytes], tuple[int, bytes]], reason: str
):
    url = tsa_server(lambda body: handle(tsa, body))
    with pytest.raises(TimestampUnavailable, match=reason) as error:
        request_timestamp(url, bytes(32), timeout_seconds=5)
    if reason == "refused":
        assert error.value.failure == frozenset({"bad_data_format"})
