"""The certification authority: root, issuing CA, people's signing certificates, CRLs.

Pure functions of (keys, names, time): the caller keeps the keys in the key store and passes
`now` (an aware UTC datetime) in. The CA keys are ECDSA P-256 by default (the demo CA and
`ca init` generate them so); certificates are signed with SHA-256 whatever the CA key type.

The PKI is three levels: a self-signed root, one issuing CA below it (pathlen 0), and the
people's roaming certificates (digitalSignature + nonRepudiation, no extended key usage so
that S/MIME and PDF validators accept them for document signatures).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from app.crypto.external_signing import DigestSigner, sign_certificate, sign_crl
from app.crypto.keystore import PrivateKey, PublicKey

ORGANIZATION = "roamsign"
# RFC 5280 Appendix A: ub-common-name and ub-serial-number.
MAX_COMMON_NAME = 64
MAX_SUBJECT_SERIAL = 64
# Longest chain we follow: leaf -> issuing CA -> root, with room for one more CA level.
_MAX_DEPTH = 4
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")
_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


@dataclass(frozen=True)
class HeldKey:
    """A CA key this process cannot hold (a token's): its public key, and what signs a digest.

    Wherever a CA key is taken, a `HeldKey` may stand for the private key: certificates and
    CRLs are then signed through `app.crypto.external_signing`, with the same result.
    """

    public: PublicKey
    sign: DigestSigner

    def public_key(self) -> PublicKey:
        return self.public


CaKey = PrivateKey | HeldKey


def build_root_ca(key: CaKey, name: str, *, now: datetime, validity_days: int) -> x509.Certificate:
    """Self-sign the root CA certificate; used once, by `ca init`."""
    subject = _ca_name(f"{name} Root CA")
    builder = (
        _base_builder(
            subject,
            subject,
            key.public_key(),
            not_before=now,
            not_after=now + timedelta(validity_days),
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _signed_certificate(builder, key)


def build_issuing_ca(
    key: CaKey,
    root_cert: x509.Certificate,
    root_key: CaKey,
    name: str,
    *,
    now: datetime,
    validity_days: int,
    crl_url: str | None = None,
    ca_issuers_url: str | None = None,
    ocsp_url: str | None = None,
) -> x509.Certificate:
    """Certify the issuing CA (the one that signs people's certificates) under the root.

    Its validity never runs past the root's. `crl_url` (the root's CRL), `ca_issuers_url`
    (the root certificate, DER) and `ocsp_url` give long-term validators the revocation
    data they demand for every certificate below the root; left out, none is written.
    """
    not_after = min(now + timedelta(validity_days), root_cert.not_valid_after_utc)
    builder = (
        _base_builder(
            _ca_name(f"{name} Issuing CA"),
            root_cert.subject,
            key.public_key(),
            not_before=now,
            not_after=not_after,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(root_cert), critical=False)
    )
    builder = _with_revocation_pointers(builder, crl_url, ca_issuers_url, ocsp_url)
    return _signed_certificate(builder, root_key)


def issue_signing_certificate(
    public_key: PublicKey,
    subject_name: str,
    subject_serial: str,
    issuer_cert: x509.Certificate,
    issuer_key: CaKey,
    *,
    now: datetime,
    validity_days: int,
    serial: int | None = None,
    crl_url: str | None = None,
    ca_issuers_url: str | None = None,
    ocsp_url: str | None = None,
) -> x509.Certificate:
    """Issue a person's roaming signing certificate (ECDSA P-256 or RSA key).

    `subject_name` is the person's name, any Unicode; names longer than the 64 characters
    X.520 allows a common name are cut to 64. `subject_serial` is the opaque per-person
    identifier put in the subject's serialNumber attribute (PrintableString, at most 64
    characters): never the national id itself. `serial` defaults to a random 159-bit number.
    The validity never runs past the issuing CA's. `crl_url` becomes the CRL distribution
    point (RFC 5280 s.4.2.1.13), `ca_issuers_url` the authority information access entry
    for the issuer's certificate (s.4.2.2.1) and `ocsp_url` the OCSP responder's entry, so a
    relying party can find all of them on its own.
    """
    _check_subject_key(public_key)
    common_name = subject_name.strip()[:MAX_COMMON_NAME]
    if not common_name:
        raise ValueError("subject_name is empty")
    if len(subject_serial) > MAX_SUBJECT_SERIAL or not _PRINTABLE.fullmatch(subject_serial):
        raise ValueError("subject_serial must be 1-64 PrintableString characters")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, subject_serial),
        ]
    )
    builder = _end_entity_builder(
        public_key,
        subject,
        issuer_cert,
        now=now,
        validity_days=validity_days,
        serial=serial,
        usage=_signature_key_usage(content_commitment=True),
    )
    builder = _with_revocation_pointers(builder, crl_url, ca_issuers_url, ocsp_url)
    return _signed_certificate(builder, issuer_key)


def issue_tsa_certificate(
    public_key: PublicKey,
    issuer_cert: x509.Certificate,
    sign: DigestSigner,
    name: str,
    *,
    now: datetime,
    validity_days: int,
    serial: int | None = None,
    crl_url: str | None = None,
    ca_issuers_url: str | None = None,
    ocsp_url: str | None = None,
) -> x509.Certificate:
    """Issue the time-stamping authority's certificate under the issuing CA.

    RFC 3161 s.2.3: the only extended key usage is timeStamping, marked critical, so the key
    signs time-stamps and nothing else. `sign(digest, hash_algorithm)` is the issuing CA's
    key (the key store or the token); the revocation pointers are as for people's
    certificates.
    """
    _check_subject_key(public_key)
    builder = _end_entity_builder(
        public_key,
        _ca_name(f"{name} Time-Stamping Authority"),
        issuer_cert,
        now=now,
        validity_days=validity_days,
        serial=serial,
        usage=_signature_key_usage(content_commitment=True),
    ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    builder = _with_revocation_pointers(builder, crl_url, ca_issuers_url, ocsp_url)
    return sign_certificate(builder, _supported_public_key(issuer_cert), sign)


def issue_ocsp_responder_certificate(
    public_key: PublicKey,
    issuer_cert: x509.Certificate,
    sign: DigestSigner,
    name: str,
    *,
    now: datetime,
    validity_days: int,
    serial: int | None = None,
) -> x509.Certificate:
    """Issue a delegated OCSP responder's certificate, signed by the CA it answers for.

    RFC 6960 s.4.2.2.2: extended key usage OCSPSigning, issued directly by that CA. It
    carries id-pkix-ocsp-nocheck (s.4.2.2.2.1), so clients do not ask about the responder's
    own status; keep `validity_days` short for that reason, and re-issue often.
    """
    _check_subject_key(public_key)
    builder = (
        _end_entity_builder(
            public_key,
            _ca_name(f"{name} OCSP Responder"),
            issuer_cert,
            now=now,
            validity_days=validity_days,
            serial=serial,
            usage=_signature_key_usage(content_commitment=False),
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    return sign_certificate(builder, _supported_public_key(issuer_cert), sign)


def revocation_pointers(
    crl_url: str | None = None,
    ca_issuers_url: str | None = None,
    ocsp_url: str | None = None,
) -> list[x509.ExtensionType]:
    """The CRL distribution point and authority information access extensions for these URLs.

    `ca_issuers_url` should serve the issuer's certificate as one DER certificate
    (`application/pkix-cert`, RFC 5280 s.4.2.2.1), not a PEM chain.
    """
    extensions: list[x509.ExtensionType] = []
    if crl_url is not None:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        extensions.append(x509.CRLDistributionPoints([point]))
    access = [
        x509.AccessDescription(method, x509.UniformResourceIdentifier(url))
        for method, url in (
            (AuthorityInformationAccessOID.CA_ISSUERS, ca_issuers_url),
            (AuthorityInformationAccessOID.OCSP, ocsp_url),
        )
        if url is not None
    ]
    if access:
        extensions.append(x509.AuthorityInformationAccess(access))
    return extensions


def build_crl(
    issuer_cert: x509.Certificate,
    issuer_key: CaKey,
    revoked: Sequence[tuple[int, datetime, str]],
    *,
    now: datetime,
    next_update_seconds: int,
    crl_number: int | None = None,
) -> x509.CertificateRevocationList:
    """Sign the issuing CA's CRL listing `(serial, revoked_at, reason)` entries.

    `reason` is an RFC 5280 name (`keyCompromise`, `superseded`, ...); `unspecified` is
    left out of the entry, as RFC 5280 s.5.3.1 asks. `crl_number` defaults to `now` in Unix
    seconds, which increases from one CRL to the next as the RFC requires.
    """
    number = int(now.timestamp()) if crl_number is None else crl_number
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(_whole_seconds(now))
        .next_update(_whole_seconds(now + timedelta(seconds=next_update_seconds)))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_identifier(issuer_cert), critical=False)
    )
    for serial, revoked_at, reason in revoked:
        builder = builder.add_revoked_certificate(_revoked_entry(serial, revoked_at, reason))
    if isinstance(issuer_key, HeldKey):
        return sign_crl(builder, issuer_key.public, issuer_key.sign)
    return builder.sign(issuer_key, _signature_hash(issuer_key))


def verify_certificate_chain(
    leaf: x509.Certificate,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    at: datetime | None = None,
) -> str | None:
    """Check that `leaf` chains to one of `roots` through `intermediates`; None when it does.

    Otherwise the reason, for the caller to report. Checks each issuer's signature, that
    issuers are CAs allowed to sign certificates (and their path length), that the leaf may
    sign documents, and, when `at` is given, that every certificate is valid at that time.
    Revocation is the caller's business.
    """
    problem = _leaf_problem(leaf)
    if problem:
        return problem
    chain = [leaf]
    while len(chain) <= _MAX_DEPTH:
        current = chain[-1]
        if any(_same(current, root) for root in roots):
            return _validity_problem(chain, at)
        issuer = _find_issuer(current, [*intermediates, *roots], chain)
        if issuer is None:
            return "certificate does not chain to a trusted CA"
        problem = _issuer_problem(issuer, intermediates_below=len(chain) - 1)
        if problem:
            return problem
        chain.append(issuer)
    return "certificate chain is too long"


def certificate_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text, as the API returns it."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def serial_hex(cert: x509.Certificate) -> str:
    """The certificate serial number as lowercase hex, how we name a certificate."""
    return format(cert.serial_number, "x")


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: PublicKey,
    *,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(_whole_seconds(not_before))
        .not_valid_after(_whole_seconds(not_after))
    )


def _with_revocation_pointers(
    builder: x509.CertificateBuilder,
    crl_url: str | None,
    ca_issuers_url: str | None,
    ocsp_url: str | None,
) -> x509.CertificateBuilder:
    for extension in revocation_pointers(crl_url, ca_issuers_url, ocsp_url):
        builder = builder.add_extension(extension, critical=False)
    return builder


def _end_entity_builder(
    public_key: PublicKey,
    subject: x509.Name,
    issuer_cert: x509.Certificate,
    *,
    now: datetime,
    validity_days: int,
    serial: int | None,
    usage: x509.KeyUsage,
) -> x509.CertificateBuilder:
    not_after = min(now + timedelta(validity_days), issuer_cert.not_valid_after_utc)
    return (
        _base_builder(
            subject,
            issuer_cert.subject,
            public_key,
            not_before=now,
            not_after=not_after,
            serial=serial,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer_cert), critical=False)
    )


def _signature_key_usage(*, content_commitment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            _supported_public_key(issuer_cert)
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _signed_certificate(builder: x509.CertificateBuilder, key: CaKey) -> x509.Certificate:
    if isinstance(key, HeldKey):
        return sign_certificate(builder, key.public, key.sign)
    return builder.sign(key, _signature_hash(key))


def _signature_hash(key: PrivateKey) -> hashes.SHA256:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("CA keys must be ECDSA or RSA")
    return hashes.SHA256()


def _check_subject_key(public_key: PublicKey) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ValueError("EC keys must be on P-256")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size not in (2048, 3072):
            raise ValueError("RSA keys must be 2048 or 3072 bits")
    else:
        raise TypeError("signing keys must be ECDSA P-256 or RSA")


def _supported_public_key(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("unsupported public key type")
    return key


def _revoked_entry(serial: int, revoked_at: datetime, reason: str) -> x509.RevokedCertificate:
    flag = x509.ReasonFlags(reason)
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(_whole_seconds(revoked_at))
    )
    if flag is not x509.ReasonFlags.unspecified:
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()


def _whole_seconds(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.replace(microsecond=0)


def _same(a: x509.Certificate, b: x509.Certificate) -> bool:
    return a.public_bytes(serialization.Encoding.DER) == b.public_bytes(serialization.Encoding.DER)


def _find_issuer(
    cert: x509.Certificate,
    candidates: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate],
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != cert.issuer or any(_same(candidate, c) for c in chain):
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _leaf_problem(leaf: x509.Certificate) -> str | None:
    try:
        constraints = _extension(leaf, x509.BasicConstraints)
        usage = _extension(leaf, x509.KeyUsage)
    except ValueError:
        return "certificate extensions are malformed"
    if constraints is not None and constraints.ca:
        return "certificate is a CA certificate"
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        return "certificate key usage does not allow signatures"
    return None


def _issuer_problem(issuer: x509.Certificate, intermediates_below: int) -> str | None:
    try:
        constraints = _extension(issuer, x509.BasicConstraints)
        usage = _extension(issuer, x509.KeyUsage)
    except ValueError:
        return "CA certificate extensions are malformed"
    if constraints is None or not constraints.ca:
        return "issuer is not a CA"
    # RFC 5280 s.4.2.1.9: pathLenConstraint bounds the CA certificates between it and the leaf.
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        return "CA path length exceeded"
    if usage is not None and not usage.key_cert_sign:
        return "issuer key usage does not allow certificate signing"
    return None


def _extension(cert: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _validity_problem(chain: Sequence[x509.Certificate], at: datetime | None) -> str | None:
    if at is None:
        return None
    for cert in chain:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            return "certificate not valid at the signing time"
    return None
