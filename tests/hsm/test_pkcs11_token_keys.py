"""Token-resident keys: the CA's signing keys (certificates, CRLs) and the HMAC secret keys."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import PyKCS11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.crypto.external_signing import sign_certificate, sign_crl
from app.crypto.keystore import KeyAlgorithm, PublicKey, new_private_key
from app.crypto.pkcs11 import Pkcs11KeyStore, TokenKeyExists, TokenKeyMissing
from app.crypto.pkcs11_format import verify_digest
from tests.hsm.conftest import USER_PIN, SoftHsmToken

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "roamsign"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def _signer(store: Pkcs11KeyStore, label: str):  # type: ignore[no-untyped-def]
    return lambda digest, hash_name: store.sign_with_token_key(label, digest, hash_name)


def _root(store: Pkcs11KeyStore, label: str, public_key: PublicKey) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("roamsign Test Root CA"))
        .issuer_name(_name("roamsign Test Root CA"))
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return sign_certificate(builder, public_key, _signer(store, label))


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_a_token_ca_key_signs_certificates_and_crls_that_openssl_accepts(
    key_store: Pkcs11KeyStore, tmp_path: Path, algorithm: KeyAlgorithm
) -> None:
    root_public = key_store.generate_token_key("roamsign-root", algorithm)
    assert (
        key_store.token_public_key("roamsign-root").public_numbers() == root_public.public_numbers()
    )  # type: ignore[operator]
    root = _root(key_store, "roamsign-root", root_public)
    person = new_private_key("ecdsa-p256").public_key()
    leaf = sign_certificate(
        x509.CertificateBuilder()
        .subject_name(_name("Siti binti Ahmad"))
        .issuer_name(root.subject)
        .public_key(person)
        .serial_number(0x1234)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True),
        root_public,
        _signer(key_store, "roamsign-root"),
    )
    root.verify_directly_issued_by(root)
    leaf.verify_directly_issued_by(root)
    check = subprocess.run(
        [
            "openssl",
            "verify",
            "-attime",
            str(int(NOW.timestamp()) + 60),
            "-CAfile",
            _pem(tmp_path / "root.pem", root),
            _pem(tmp_path / "leaf.pem", leaf),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    crl = sign_crl(
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(0x1234).revocation_date(NOW).build()
        ),
        root_public,
        _signer(key_store, "roamsign-root"),
    )
    assert crl.is_signature_valid(root_public)
    assert crl.get_revoked_certificate_by_serial_number(0x1234) is not None
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    check = subprocess.run(
        ["openssl", "crl", "-in", tmp_path / "crl.pem", "-CAfile", tmp_path / "root.pem", "-noout"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and "verify OK" in check.stderr + check.stdout


def test_a_token_ca_key_never_leaves_the_token(key_store: Pkcs11KeyStore) -> None:
    key_store.generate_token_key("roamsign-issuing", "ecdsa-p256")
    with pytest.raises(TokenKeyExists):
        key_store.generate_token_key("roamsign-issuing", "ecdsa-p256")
    with key_store._token.session() as session:
        (handle,) = session.findObjects(
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, "roamsign-issuing")]
        )
        attributes = session.getAttributeValue(
            handle, [PyKCS11.CKA_TOKEN, PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE]
        )
        assert attributes == [True, True, False]
        kek = key_store._wrapping_kek(session).wrap
        with pytest.raises(PyKCS11.PyKCS11Error, match="CKR_KEY_UNEXTRACTABLE"):
            session.wrapKey(kek, handle, PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_WRAP_PAD))
    digest = hashlib.sha256(b"tbs").digest()
    signature = key_store.sign_with_token_key("roamsign-issuing", digest, "sha256")
    verify_digest(key_store.token_public_key("roamsign-issuing"), signature, digest, "sha256")
    with pytest.raises(TokenKeyMissing):
        key_store.sign_with_token_key("roamsign-nothing", digest, "sha256")


def test_a_secret_key_is_stable_across_stores_and_processes(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore
) -> None:
    key_store.secret_key("roamsign-pin-pepper")
    key_store.secret_key("roamsign-pin-pepper")  # once only
    first = key_store.mac("roamsign-pin-pepper", b"person-1|123456")
    assert len(first) == 32
    assert key_store.mac("roamsign-pin-pepper", b"person-1|123457") != first

    again = Pkcs11KeyStore.from_settings(softhsm_token.settings())
    assert again.mac("roamsign-pin-pepper", b"person-1|123456") == first
    again.close()

    script = (
        "import sys; from app.crypto.pkcs11 import Pkcs11KeyStore;"
        f"s = Pkcs11KeyStore.open({softhsm_token.module!r}, {softhsm_token.label!r}, {USER_PIN!r});"
        "sys.stdout.write(s.mac('roamsign-pin-pepper', b'person-1|123456').hex())"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        env=softhsm_token.env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert bytes.fromhex(other.stdout) == first


def test_a_secret_key_cannot_be_read_out(key_store: Pkcs11KeyStore) -> None:
    key_store.secret_key("roamsign-otp-mac")
    with key_store._token.session() as session:
        (handle,) = session.findObjects(
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_LABEL, "roamsign-otp-mac")]
        )
        assert session.getAttributeValue(handle, [PyKCS11.CKA_VALUE], allAsBinary=True) == [None]
        assert session.getAttributeValue(
            handle, [PyKCS11.CKA_TOKEN, PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE]
        ) == [True, True, False]
    with pytest.raises(TokenKeyMissing):
        key_store.mac("roamsign-not-created", b"data")


def test_an_imported_secret_key_gives_standard_hmac_sha256(key_store: Pkcs11KeyStore) -> None:
    known = bytes(range(32))
    key_store.import_secret_key("test-known-hmac", known)
    key_store.import_secret_key("test-known-hmac", known)  # idempotent, for a resumed migration
    for data in (b"a", b"otp|request-1|123456", bytes(1000)):
        assert (
            key_store.mac("test-known-hmac", data) == hmac.new(known, data, hashlib.sha256).digest()
        )
    with pytest.raises(TokenKeyExists):
        key_store.import_secret_key("test-known-hmac", bytes(32))
    with key_store._token.session() as session:
        (handle,) = session.findObjects(
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_LABEL, "test-known-hmac")]
        )
        assert session.getAttributeValue(handle, [PyKCS11.CKA_EXTRACTABLE]) == [False]
    with pytest.raises(ValueError):
        key_store.mac("test-known-hmac", b"")
    assert isinstance(key_store.generate_token_key("ec", "ecdsa-p256"), ec.EllipticCurvePublicKey)
