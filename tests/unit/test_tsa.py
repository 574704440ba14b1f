"""The time-stamping authority: openssl's own queries answered, and the replies verified by
`openssl ts -verify`; refused queries answered with a rejection openssl reads back."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import algos, cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.crypto.keystore import KeyAlgorithm
from app.crypto.tsa import (
    TimestampQueryRejected,
    TimeStampResp,
    parse_timestamp_query,
    rejection_response,
    reply_to_query,
    timestamp_query,
    timestamp_response,
)
from tests.unit.ltv_pki import NOW, TSA_POLICY, Pki, make_pki, new_key, openssl, signer, write_pem

STAMPED_AT = NOW + timedelta(days=3, seconds=7, microseconds=250_000)
DOCUMENT = b"Baucar Bayaran PV-2026-000123\n"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def answer(
    pki: Pki, query_der: bytes, algorithm: KeyAlgorithm = "ecdsa-p256", serial: int = 0x5EED
) -> tuple[bytes, x509.Certificate]:
    key = new_key(algorithm)
    tsa = pki.issue_tsa(key)
    reply = timestamp_response(
        parse_timestamp_query(query_der),
        now=STAMPED_AT,
        serial=serial,
        policy_oid=TSA_POLICY,
        tsa_cert=tsa,
        chain=[pki.issuing, pki.root],
        sign=signer(key),
    )
    return reply, tsa


def openssl_query(tmp_path: Path, *options: str) -> Path:
    (tmp_path / "document").write_bytes(DOCUMENT)
    query = tmp_path / "q.tsq"
    result = openssl("ts", "-query", "-data", tmp_path / "document", *options, "-out", query)
    assert result.returncode == 0, result.stderr
    return query


def verify(tmp_path: Path, pki: Pki, tsa: x509.Certificate, reply: bytes) -> str:
    (tmp_path / "r.tsr").write_bytes(reply)
    result = openssl(
        "ts",
        "-verify",
        "-queryfile",
        tmp_path / "q.tsq",
        "-in",
        tmp_path / "r.tsr",
        "-CAfile",
        write_pem(tmp_path / "root.pem", pki.root),
        "-untrusted",
        write_pem(tmp_path / "untrusted.pem", tsa, pki.issuing),
        "-attime",
        str(int((STAMPED_AT + timedelta(hours=1)).timestamp())),
    )
    return result.stdout + result.stderr


def reply_text(tmp_path: Path, reply: bytes) -> str:
    (tmp_path / "r.tsr").write_bytes(reply)
    result = openssl("ts", "-reply", "-in", tmp_path / "r.tsr", "-text")
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_openssl
@pytest.mark.parametrize("hash_algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("cert_req", [True, False])
def test_openssl_verifies_the_reply_to_its_query(
    pki: Pki, tmp_path: Path, hash_algorithm: str, cert_req: bool
):
    options = [f"-{hash_algorithm}", *(["-cert"] if cert_req else [])]
    query = openssl_query(tmp_path, *options)
    reply, tsa = answer(pki, query.read_bytes())
    assert "Verification: OK" in verify(tmp_path, pki, tsa, reply)


@needs_openssl
@pytest.mark.parametrize("algorithm", ["rsa-2048", "rsa-3072"])
def test_openssl_verifies_a_reply_signed_by_an_rsa_tsa_key(
    pki: Pki, tmp_path: Path, algorithm: KeyAlgorithm
):
    query = openssl_query(tmp_path, "-sha256", "-cert")
    reply, tsa = answer(pki, query.read_bytes(), algorithm)
    assert "Verification: OK" in verify(tmp_path, pki, tsa, reply)


@needs_openssl
def test_openssl_refuses_a_reply_to_another_query(pki: Pki, tmp_path: Path):
    reply, tsa = answer(pki, openssl_query(tmp_path, "-sha256", "-cert").read_bytes())
    openssl_query(tmp_path, "-sha256", "-cert")  # a new nonce, same document
    assert "Verification: OK" not in verify(tmp_path, pki, tsa, reply)


@needs_openssl
def test_openssl_reads_nonce_time_accuracy_policy_and_serial(pki: Pki, tmp_path: Path):
    query = openssl_query(tmp_path, "-sha256", "-cert", "-tspolicy", TSA_POLICY)
    nonce = tsp.TimeStampReq.load(query.read_bytes())["nonce"].native
    reply, _ = answer(pki, query.read_bytes(), serial=0xC0FFEE)
    text = reply_text(tmp_path, reply)
    assert "Status: Granted." in text
    assert f"Policy OID: {TSA_POLICY}" in text
    assert "Serial number: 0xC0FFEE" in text
    assert "Time stamp: Mar  5 09:30:22 2026 GMT" in text
    assert "Accuracy: 0x01 seconds" in text
    # OpenSSL prints whole bytes: a nonce whose first nibble is 0 keeps its leading zero.
    printed = re.search(r"^Nonce: 0x([0-9A-F]+)$", text, re.M)
    assert printed is not None and int(printed.group(1), 16) == nonce
    assert "TSA: DirName:/O=roamsign/CN=JDN Test Time-Stamping Authority" in text


def test_token_names_the_tsa_certificate_and_echoes_the_imprint(pki: Pki):
    digest = hashlib.sha384(DOCUMENT).digest()
    query = timestamp_query(digest, "sha384", nonce=42)
    reply, tsa = answer(pki, query)
    token = tsp.TimeStampResp.load(reply)["time_stamp_token"]
    signed_data = token["content"]
    assert signed_data["version"].native == "v3"
    assert signed_data["encap_content_info"]["content_type"].native == "tst_info"
    tst_info = signed_data["encap_content_info"]["content"].parsed
    assert (
        tst_info["message_imprint"].dump() == tsp.TimeStampReq.load(query)["message_imprint"].dump()
    )
    assert tst_info["nonce"].native == 42
    assert tst_info["gen_time"].native == STAMPED_AT.replace(microsecond=0)
    [signer_info] = signed_data["signer_infos"]
    attributes = {a["type"].native: a["values"] for a in signer_info["signed_attrs"]}
    [certificate_id] = attributes["signing_certificate_v2"][0]["certs"]
    tsa_der = tsa.public_bytes(serialization.Encoding.DER)
    assert certificate_id["cert_hash"].native == hashlib.sha256(tsa_der).digest()
    assert attributes["message_digest"][0].native == hashlib.sha256(tst_info.dump()).digest()
    embedded = {c.chosen.dump() for c in signed_data["certificates"]}
    assert tsa_der in embedded


def test_no_certificates_unless_the_query_asks(pki: Pki):
    query = timestamp_query(hashlib.sha256(DOCUMENT).digest(), "sha256", nonce=None, cert_req=False)
    reply, _ = answer(pki, query)
    token = tsp.TimeStampResp.load(reply)["time_stamp_token"]
    assert not token["content"]["certificates"]
    assert token["content"]["encap_content_info"]["content"].parsed["nonce"].native is None


def test_tsa_certificate_may_only_time_stamp(pki: Pki):
    tsa = pki.issue_tsa(new_key())
    usage = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert usage.critical
    assert list(usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    key_usage = tsa.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and not key_usage.key_cert_sign
    assert not tsa.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    tsa.verify_directly_issued_by(pki.issuing)


def test_a_sign_callback_with_the_wrong_key_is_caught(pki: Pki):
    tsa = pki.issue_tsa(new_key())
    query = parse_timestamp_query(timestamp_query(bytes(32), "sha256", nonce=1))
    with pytest.raises(ValueError, match="does not match"):
        timestamp_response(
            query,
            now=STAMPED_AT,
            serial=1,
            policy_oid=TSA_POLICY,
            tsa_cert=tsa,
            chain=[],
            sign=signer(new_key()),
        )


def unknown_hash_query() -> bytes:
    imprint = {
        "hash_algorithm": algos.DigestAlgorithm({"algorithm": "1.2.3.4.5"}),
        "hashed_message": bytes(32),
    }
    return bytes(tsp.TimeStampReq({"version": "v1", "message_imprint": imprint}).dump())


@pytest.mark.parametrize(
    ("query", "failure"),
    [
        (b"this is not a time-stamp query", "bad_data_format"),
        (b"", "bad_data_format"),
        (b"\x30\x03\x02\x01\x01", "bad_data_format"),
        (unknown_hash_query(), "bad_alg"),
        (bytes(timestamp_query(bytes(32), "sha256", nonce=1))[:-3], "bad_data_format"),
    ],
)
def test_parse_refuses_with_the_failure_info(query: bytes, failure: str):
    with pytest.raises(TimestampQueryRejected) as rejected:
        parse_timestamp_query(query)
    assert rejected.value.failure == failure


def test_parse_refuses_an_imprint_of_the_wrong_length():
    request = tsp.TimeStampReq.load(timestamp_query(bytes(32), "sha256", nonce=1))
    short = {"hash_algorithm": request["message_imprint"]["hash_algorithm"], "hashed_message": b"x"}
    with pytest.raises(TimestampQueryRejected) as rejected:
        parse_timestamp_query(tsp.TimeStampReq({"version": "v1", "message_imprint": short}).dump())
    assert rejected.value.failure == "bad_data_format"


def reply_to(pki: Pki, query: bytes) -> bytes:
    key = new_key()
    return reply_to_query(
        query,
        now=STAMPED_AT,
        serial=9,
        policy_oid=TSA_POLICY,
        tsa_cert=pki.issue_tsa(key),
        chain=[pki.issuing],
        sign=signer(key),
    )


@needs_openssl
@pytest.mark.parametrize(
    ("make_query", "failure_text"),
    [
        (lambda tmp: openssl_query(tmp, "-sha1", "-cert").read_bytes(), "unrecognized or unsupp"),
        (lambda tmp: unknown_hash_query(), "unrecognized or unsupported algorithm"),
        (lambda tmp: b"\x00garbage\xff" * 5, "the data submitted has the wrong format"),
        (
            lambda tmp: openssl_query(tmp, "-sha256", "-tspolicy", "1.2.3.4.5").read_bytes(),
            "the requested TSA policy is not supported",
        ),
    ],
    ids=["sha1", "unknown-oid", "garbage", "other-policy"],
)
def test_openssl_reads_the_rejection(
    pki: Pki, tmp_path: Path, make_query: Callable[[Path], bytes], failure_text: str
):
    text = reply_text(tmp_path, reply_to(pki, make_query(tmp_path)))
    assert "Status: Rejected." in text
    assert failure_text in text
    assert "TST info:\nNot included." in text


def test_rejection_response_carries_only_the_failure():
    reply = TimeStampResp.load(rejection_response("bad_request", "version 2"))
    status = reply["status"].native
    assert status["status"] == "rejection"
    assert status["fail_info"] == {"bad_request"}
    assert status["status_string"] == ["version 2"]
    assert reply["time_stamp_token"].native is None


def test_content_info_of_the_token_is_signed_data(pki: Pki):
    reply, _ = answer(pki, timestamp_query(bytes(64), "sha512", nonce=3))
    token = cms.ContentInfo.load(tsp.TimeStampResp.load(reply)["time_stamp_token"].dump())
    assert token["content_type"].native == "signed_data"


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_the_reply_is_the_der_asn1crypto_writes_for_it(pki: Pki, algorithm: KeyAlgorithm):
    # The token is framed by hand (app/crypto/der.py): re-encoded from its parsed values, it
    # must come out byte for byte the same.
    for cert_req in (True, False):
        query = timestamp_query(bytes(32), "sha256", nonce=2**70 + 1, cert_req=cert_req)
        reply, _ = answer(pki, query, algorithm)
        assert tsp.TimeStampResp.load(reply).dump(force=True) == reply
        token = tsp.TimeStampResp.load(reply)["time_stamp_token"]
        tst_info = token["content"]["encap_content_info"]["content"]
        assert tst_info.parsed.dump(force=True) == tst_info.parsed.dump()
