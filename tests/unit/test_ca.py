"""The CA: certificates and CRLs checked by cryptography and by the real openssl."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.crypto.ca import (
    build_crl,
    build_issuing_ca,
    build_root_ca,
    certificate_pem,
    issue_signing_certificate,
    serial_hex,
    verify_certificate_chain,
)
from app.crypto.keystore import PrivateKey

NOW = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    root_key: PrivateKey
    issuing: x509.Certificate
    issuing_key: PrivateKey


def make_pki(name: str = "JDN Test") -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(root_key, name, now=NOW, validity_days=7300)
    issuing = build_issuing_ca(issuing_key, root, root_key, name, now=NOW, validity_days=3650)
    return Pki(root, root_key, issuing, issuing_key)


def issue(pki: Pki, key: PrivateKey, name: str = "Nur Aisyah binti Ahmad") -> x509.Certificate:
    return issue_signing_certificate(
        key.public_key(),
        name,
        "RS-7f3a9c0e",
        pki.issuing,
        pki.issuing_key,
        now=NOW,
        validity_days=730,
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def leaf(pki: Pki) -> x509.Certificate:
    return issue(pki, ec.generate_private_key(ec.SECP256R1()))


def write_pem(path: Path, *certs: x509.Certificate) -> str:
    path.write_text("".join(certificate_pem(c) for c in certs))
    return str(path)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def attime(moment: datetime = NOW) -> list[str]:
    return ["-attime", str(int(moment.timestamp()))]


@needs_openssl
def test_openssl_verifies_root_issuing_leaf(pki: Pki, leaf: x509.Certificate, tmp_path: Path):
    result = openssl(
        "verify",
        *attime(NOW + timedelta(days=1)),
        "-CAfile",
        write_pem(tmp_path / "root.pem", pki.root),
        "-untrusted",
        write_pem(tmp_path / "issuing.pem", pki.issuing),
        write_pem(tmp_path / "leaf.pem", leaf),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


@needs_openssl
def test_openssl_rejects_leaf_of_another_ca(pki: Pki, tmp_path: Path):
    stranger = issue(make_pki("Other"), ec.generate_private_key(ec.SECP256R1()))
    result = openssl(
        "verify",
        *attime(NOW + timedelta(days=1)),
        "-CAfile",
        write_pem(tmp_path / "root.pem", pki.root),
        "-untrusted",
        write_pem(tmp_path / "issuing.pem", pki.issuing),
        write_pem(tmp_path / "leaf.pem", stranger),
    )
    assert result.returncode != 0


@needs_openssl
def test_openssl_refuses_leaf_listed_in_crl(pki: Pki, tmp_path: Path):
    revoked = issue(pki, ec.generate_private_key(ec.SECP256R1()))
    crl = build_crl(
        pki.issuing,
        pki.issuing_key,
        [(revoked.serial_number, NOW + timedelta(hours=1), "keyCompromise")],
        now=NOW + timedelta(hours=1),
        next_update_seconds=86400,
    )
    crl_path = tmp_path / "crl.pem"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    result = openssl(
        "verify",
        *attime(NOW + timedelta(hours=2)),
        "-crl_check",
        "-CRLfile",
        str(crl_path),
        "-CAfile",
        write_pem(tmp_path / "root.pem", pki.root),
        "-untrusted",
        write_pem(tmp_path / "issuing.pem", pki.issuing),
        write_pem(tmp_path / "leaf.pem", revoked),
    )
    assert result.returncode != 0
    assert "revoked" in result.stdout + result.stderr


def test_root_is_a_self_signed_ca(pki: Pki):
    root = pki.root
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "JDN Test Root CA"
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "roamsign"
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    root.verify_directly_issued_by(root)
    assert root.not_valid_before_utc == NOW.replace(microsecond=0)


def test_issuing_ca_has_pathlen_zero_and_links_to_root(pki: Pki):
    issuing = pki.issuing
    name = issuing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert name == "JDN Test Issuing CA"
    constraints = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = issuing.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = pki.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    issuing.verify_directly_issued_by(pki.root)


def test_issuing_ca_never_outlives_root():
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(root_key, "Short", now=NOW, validity_days=30)
    issuing = build_issuing_ca(
        ec.generate_private_key(ec.SECP256R1()), root, root_key, "Short", now=NOW, validity_days=90
    )
    assert issuing.not_valid_after_utc == root.not_valid_after_utc


def test_leaf_may_sign_documents_only(pki: Pki, leaf: x509.Certificate):
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.content_commitment
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_encipherment)
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_oid(ExtendedKeyUsageOID.CLIENT_AUTH)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuing_ski = pki.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == issuing_ski.value.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    leaf.verify_directly_issued_by(pki.issuing)
    assert leaf.not_valid_after_utc == NOW.replace(microsecond=0) + timedelta(days=730)


def test_leaf_subject_carries_opaque_serial_and_organisation(leaf: x509.Certificate):
    subject = leaf.subject
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "RS-7f3a9c0e"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "roamsign"


@pytest.mark.parametrize(
    "name",
    ["Nur Aisyah binti Ahmad", "O'Brien <b>", "Muthu a/l Ramasamy", "张伟", "Zoë 😀 Ñandú"],
)
def test_subject_common_name_round_trips_unicode(pki: Pki, name: str):
    cert = issue(pki, ec.generate_private_key(ec.SECP256R1()), name)
    reloaded = x509.load_pem_x509_certificate(certificate_pem(cert).encode())
    assert reloaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name


def test_long_names_are_cut_to_the_x520_limit(pki: Pki):
    name = "Wan Nur Aisyah Humaira binti Wan Ahmad Faizal Syazwan bin Wan Ismail Hakimi"
    cert = issue(pki, ec.generate_private_key(ec.SECP256R1()), name)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name[:64]


@pytest.mark.parametrize("subject_serial", ["", "850101145555_x", "é", "x" * 65])
def test_subject_serial_must_be_printable_and_short(pki: Pki, subject_serial: str):
    with pytest.raises(ValueError, match="subject_serial"):
        issue_signing_certificate(
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            "A Person",
            subject_serial,
            pki.issuing,
            pki.issuing_key,
            now=NOW,
            validity_days=1,
        )


@pytest.mark.parametrize("bits", [2048, 3072])
def test_rsa_subject_keys_are_certified(pki: Pki, bits: int):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    cert = issue(pki, key)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    cert.verify_directly_issued_by(pki.issuing)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
    ],
)
def test_weak_or_unexpected_subject_keys_are_refused(pki: Pki, key: PrivateKey):
    with pytest.raises(ValueError, match="keys must"):
        issue(pki, key)


def test_serial_is_random_159_bits_and_named_in_lowercase_hex(pki: Pki, leaf: x509.Certificate):
    other = issue(pki, ec.generate_private_key(ec.SECP256R1()))
    assert 0 < leaf.serial_number < 2**159
    assert leaf.serial_number != other.serial_number
    assert serial_hex(leaf) == format(leaf.serial_number, "x")
    assert serial_hex(leaf) == serial_hex(leaf).lower()
    assert int(serial_hex(leaf), 16) == leaf.serial_number


def test_explicit_serial_is_used(pki: Pki):
    cert = issue_signing_certificate(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        "A Person",
        "RS-1",
        pki.issuing,
        pki.issuing_key,
        now=NOW,
        validity_days=1,
        serial=0xABCDEF,
    )
    assert serial_hex(cert) == "abcdef"


def test_leaf_never_outlives_issuing_ca(pki: Pki):
    cert = issue_signing_certificate(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        "A Person",
        "RS-1",
        pki.issuing,
        pki.issuing_key,
        now=NOW,
        validity_days=100_000,
    )
    assert cert.not_valid_after_utc == pki.issuing.not_valid_after_utc


def test_naive_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        build_root_ca(
            ec.generate_private_key(ec.SECP256R1()),
            "X",
            now=NOW.replace(tzinfo=None),
            validity_days=1,
        )


def test_certificate_pem_round_trips(leaf: x509.Certificate):
    pem = certificate_pem(leaf)
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert x509.load_pem_x509_certificate(pem.encode()) == leaf


def test_crl_lists_revoked_serials_with_reasons(pki: Pki):
    crl = build_crl(
        pki.issuing,
        pki.issuing_key,
        [(0x1234, NOW - timedelta(days=1), "keyCompromise"), (0x5678, NOW, "unspecified")],
        now=NOW,
        next_update_seconds=3600,
    )
    assert crl.is_signature_valid(pki.issuing.public_key())
    assert crl.issuer == pki.issuing.subject
    assert crl.last_update_utc == NOW.replace(microsecond=0)
    assert crl.next_update_utc == NOW.replace(microsecond=0) + timedelta(hours=1)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == int(
        NOW.timestamp()
    )
    crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    compromised = crl.get_revoked_certificate_by_serial_number(0x1234)
    assert compromised is not None
    assert compromised.revocation_date_utc == NOW.replace(microsecond=0) - timedelta(days=1)
    reason = compromised.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    unspecified = crl.get_revoked_certificate_by_serial_number(0x5678)
    assert unspecified is not None
    assert len(unspecified.extensions) == 0


def test_crl_number_can_be_given_and_unknown_reasons_are_refused(pki: Pki):
    crl = build_crl(pki.issuing, pki.issuing_key, [], now=NOW, next_update_seconds=60, crl_number=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert len(crl) == 0
    with pytest.raises(ValueError):
        build_crl(pki.issuing, pki.issuing_key, [(1, NOW, "lost")], now=NOW, next_update_seconds=60)


def test_chain_check_accepts_our_leaf(pki: Pki, leaf: x509.Certificate):
    assert verify_certificate_chain(leaf, [pki.root], [pki.issuing], at=NOW) is None
    assert verify_certificate_chain(leaf, [pki.root], [pki.issuing]) is None


def test_chain_check_refuses_other_ca_missing_issuer_and_bad_times(
    pki: Pki, leaf: x509.Certificate
):
    stranger = make_pki("Other")
    assert verify_certificate_chain(leaf, [stranger.root], [stranger.issuing]) is not None
    assert verify_certificate_chain(leaf, [pki.root], []) is not None
    assert verify_certificate_chain(leaf, [], [pki.issuing]) is not None
    before = NOW - timedelta(seconds=1)
    assert verify_certificate_chain(leaf, [pki.root], [pki.issuing], at=before) is not None
    after = NOW + timedelta(days=731)
    assert verify_certificate_chain(leaf, [pki.root], [pki.issuing], at=after) is not None


def test_chain_check_refuses_ca_certificates_as_signers(pki: Pki):
    problem = verify_certificate_chain(pki.issuing, [pki.root], [])
    assert problem == "certificate is a CA certificate"


def test_chain_check_enforces_path_length(pki: Pki):
    # An intermediate below the issuing CA (pathlen 0) must not be accepted.
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = build_issuing_ca(sub_key, pki.issuing, pki.issuing_key, "Sub", now=NOW, validity_days=30)
    sub_pki = Pki(pki.root, pki.root_key, sub, sub_key)
    deep_leaf = issue(sub_pki, ec.generate_private_key(ec.SECP256R1()))
    problem = verify_certificate_chain(deep_leaf, [pki.root], [pki.issuing, sub])
    assert problem == "CA path length exceeded"


def test_crl_distribution_point_and_ca_issuers_are_named_when_given(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_signing_certificate(
        key.public_key(),
        "Nur Aisyah binti Ahmad",
        "RS-7f3a9c0e",
        pki.issuing,
        pki.issuing_key,
        now=NOW,
        validity_days=730,
        crl_url="https://roamsign.jdn.gov.my/v1/ca/crl",
        ca_issuers_url="https://roamsign.jdn.gov.my/v1/ca/certificates",
    )
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not points.critical
    assert [n.value for p in points.value for n in p.full_name or []] == [
        "https://roamsign.jdn.gov.my/v1/ca/crl"
    ]
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert not access.critical
    assert [(d.access_method, d.access_location.value) for d in access.value] == [
        (
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
            "https://roamsign.jdn.gov.my/v1/ca/certificates",
        )
    ]
    assert verify_certificate_chain(certificate, [pki.root], [pki.issuing], at=NOW) is None
    without = issue(pki, key)
    with pytest.raises(x509.ExtensionNotFound):
        without.extensions.get_extension_for_class(x509.CRLDistributionPoints)
