"""CA material signed through a `DigestSigner` (the key store or the token): a CA certificate
re-issued with revocation pointers, and a CRL.

For deployments made before the issuing CA carried its root CRL distribution point and
authority information access, and for the root's CRL, which no person's revocation changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.crypto.ca import revocation_pointers
from app.crypto.external_signing import DigestSigner, sign_certificate, sign_crl
from app.crypto.keystore import PublicKey

_POINTERS = (x509.CRLDistributionPoints, x509.AuthorityInformationAccess)


def reissue_with_pointers(
    certificate: x509.Certificate,
    issuer_cert: x509.Certificate,
    sign: DigestSigner,
    *,
    crl_url: str | None,
    ca_issuers_url: str | None,
    ocsp_url: str | None = None,
) -> x509.Certificate:
    """`certificate` again (same subject, key, validity and other extensions, a new serial),
    its CRL distribution point and authority information access replaced by these URLs.

    The key identifiers are unchanged, so everything the old certificate issued chains to the
    new one as well. `sign` is `issuer_cert`'s key.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(certificate.subject)
        .issuer_name(issuer_cert.subject)
        .public_key(_public_key(certificate))
        .serial_number(x509.random_serial_number())
        .not_valid_before(certificate.not_valid_before_utc)
        .not_valid_after(certificate.not_valid_after_utc)
    )
    for extension in certificate.extensions:
        if not isinstance(extension.value, _POINTERS):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    for pointer in revocation_pointers(crl_url, ca_issuers_url, ocsp_url):
        builder = builder.add_extension(pointer, critical=False)
    return sign_certificate(builder, _public_key(issuer_cert), sign)


def has_revocation_pointers(certificate: x509.Certificate, crl_url: str) -> bool:
    """Whether `certificate` already names `crl_url` as its CRL distribution point."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return False
    return any(
        isinstance(name, x509.UniformResourceIdentifier) and name.value == crl_url
        for point in points.value
        for name in point.full_name or ()
    )


def build_signed_crl(
    issuer_cert: x509.Certificate,
    sign: DigestSigner,
    revoked: Sequence[tuple[int, datetime]],
    *,
    now: datetime,
    next_update_seconds: int,
) -> x509.CertificateRevocationList:
    """A CRL of `issuer_cert` listing `(serial, revoked_at)`, numbered by `now` in Unix
    seconds (increasing from one CRL to the next, as RFC 5280 s.5.2.3 asks)."""
    this_update = now.replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(this_update + timedelta(seconds=next_update_seconds))
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_public_key(issuer_cert)),
            critical=False,
        )
    )
    for serial, revoked_at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at.replace(microsecond=0))
            .build()
        )
    return sign_crl(builder, _public_key(issuer_cert), sign)


def _public_key(certificate: x509.Certificate) -> PublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("unsupported public key type")
    return key
