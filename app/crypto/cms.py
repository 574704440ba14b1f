"""Detached CMS signatures (RFC 5652) over a document hash, and their verification.

We never hold the document, only its hash, so the SignedData is assembled here (its parts
encoded by asn1crypto, the framing by `_der`): its messageDigest attribute is the caller's
hash as given. The private key never
comes here either: `build_detached_cms` hands the digest of the signed attributes to a `sign`
callback (the key store, possibly an HSM), as `sign_digest_with` in app/crypto/keystore.py
does. Hashing and signature checks are cryptography's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import algos, cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from app.crypto.ca import verify_certificate_chain
from app.crypto.keystore import HASHES, PublicKey

SignCallback = Callable[[bytes, str], bytes]

_ECDSA_OIDS = {"sha256": "sha256_ecdsa", "sha384": "sha384_ecdsa", "sha512": "sha512_ecdsa"}
# RFC 5652 s.11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
_UTC_TIME_YEARS = range(1950, 2050)


@dataclass(frozen=True)
class CmsVerification:
    """The outcome of `verify_cms`.

    `signer_certificate` and `signing_time` are filled in whenever they could be read, even
    when `valid` is False: trust them only when it is True. `reason` says what failed.
    """

    valid: bool
    signer_certificate: x509.Certificate | None = None
    signing_time: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RawVerification:
    """The outcome of `verify_raw`; `reason` says what failed."""

    valid: bool
    reason: str | None = None


@dataclass(frozen=True)
class _SignerData:
    certificate: x509.Certificate
    digest_algorithm: str
    signature_algorithm: str
    signature: bytes
    signed_attrs_der: bytes
    attributes: dict[str, list[Any]]


def signature_algorithm_name(public_key: PublicKey, hash_algorithm: str) -> str:
    """The name the API reports for a signature by `public_key` over `hash_algorithm`."""
    hash_name = _hash(hash_algorithm).name.upper()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ecdsa-with-{hash_name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"{hash_algorithm}WithRSAEncryption"
    raise TypeError("unsupported public key type")


def build_detached_cms(
    *,
    digest: bytes,
    hash_algorithm: str,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    signing_time: datetime,
    sign: SignCallback,
) -> bytes:
    """A DER ContentInfo/SignedData whose messageDigest is `digest`, the document's hash.

    Use for the `cms` signature format. The signed attributes are contentType (data),
    signingTime, messageDigest and signingCertificateV2 (RFC 5035); `certificate` and
    `chain` (issuing CA, root) travel in `certificates`. `sign(digest, hash_algorithm)`
    signs the digest of the signed attributes with the certificate's private key; the
    signature is checked against the certificate before it is returned.
    """
    algorithm = _hash(hash_algorithm)
    if len(digest) != algorithm.digest_size:
        raise ValueError("digest length does not match the hash algorithm")
    material = _signer_material(
        certificate.public_bytes(serialization.Encoding.DER),
        tuple(c.public_bytes(serialization.Encoding.DER) for c in chain),
    )
    rsa_key = _is_rsa(certificate)
    # DER orders a SET OF by the encodings of its members.
    attributes = b"".join(
        sorted(
            (
                _CONTENT_TYPE_DATA_ATTRIBUTE,
                _attribute_der("signing_time", _cms_time(signing_time)),
                _attribute_der("message_digest", digest),
                material.signing_certificate_v2_attribute,
            )
        )
    )
    to_sign = _der(_SET, attributes)
    signature = sign(_digest(algorithm, to_sign), hash_algorithm)
    if _signature_problem(certificate, signature, to_sign, algorithm, rsa_key):
        raise ValueError("the signature does not match the certificate's public key")
    digest_algorithm = _digest_algorithm_der(hash_algorithm)
    signer_info = _der(
        _SEQUENCE,
        _VERSION_1
        + material.sid
        + digest_algorithm
        + _der(_CONTEXT_0, attributes)  # signedAttrs [0] IMPLICIT
        + _signature_algorithm_der(rsa_key, hash_algorithm)
        + _der(_OCTET_STRING, signature),
    )
    signed_data = _der(
        _SEQUENCE,
        _VERSION_1
        + _der(_SET, digest_algorithm)
        + _ENCAPSULATED_DATA
        + material.certificates  # [0] IMPLICIT CertificateSet
        + _der(_SET, signer_info),
    )
    return _der(_SEQUENCE, _SIGNED_DATA_OID + _der(_CONTEXT_0, signed_data))


def verify_cms(
    der: bytes,
    digest: bytes,
    hash_algorithm: str,
    *,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
) -> CmsVerification:
    """Check a detached CMS signature over `digest` and its signer's chain to `roots`.

    Use to verify a `cms` signature. The signer certificate must chain to one of `roots`
    through `intermediates` (certificates embedded in the CMS are not trusted as CAs), and
    the chain must be valid at the signed signingTime when there is one. Revocation is the
    caller's. Never raises on malformed input: `valid` is False with a reason.
    """
    parsed = _parse_signed_data(der)
    if isinstance(parsed, str):
        return CmsVerification(valid=False, reason=parsed)
    signing_time = _signing_time(parsed.attributes)
    problem = _cms_problem(parsed, digest, hash_algorithm) or verify_certificate_chain(
        parsed.certificate, roots, intermediates, at=signing_time
    )
    return CmsVerification(
        valid=problem is None,
        signer_certificate=parsed.certificate,
        signing_time=signing_time,
        reason=problem,
    )


def verify_raw(
    signature: bytes,
    digest: bytes,
    hash_algorithm: str,
    certificate: x509.Certificate,
    *,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    at: datetime | None = None,
) -> RawVerification:
    """Check a `raw` signature (DER ECDSA or RSA PKCS#1 v1.5) over the prehashed `digest`.

    The certificate must chain to one of `roots` through `intermediates`; `at`, when given,
    is the time the chain must be valid at (a raw signature carries no signing time).
    Never raises on malformed input: `valid` is False with a reason.
    """
    if hash_algorithm not in HASHES:
        return RawVerification(valid=False, reason="unsupported hash algorithm")
    algorithm = HASHES[hash_algorithm]()
    if len(digest) != algorithm.digest_size:
        return RawVerification(valid=False, reason="digest length does not match the algorithm")
    problem = _signature_problem(
        certificate, signature, digest, utils.Prehashed(algorithm), _is_rsa(certificate)
    ) or verify_certificate_chain(certificate, roots, intermediates, at=at)
    return RawVerification(valid=problem is None, reason=problem)


def signing_certificate_v2_attribute(certificate: x509.Certificate) -> bytes:
    """The DER signingCertificateV2 attribute (RFC 5035) naming `certificate` by its SHA-256.

    For other SignedData builders (the time-stamping authority's tokens) to share ours.
    """
    return _signing_certificate_v2_attribute(certificate.public_bytes(serialization.Encoding.DER))


@functools.lru_cache(maxsize=64)
def _signing_certificate_v2_attribute(certificate_der: bytes) -> bytes:
    signer = asn1_x509.Certificate.load(certificate_der)
    return _attribute_der("signing_certificate_v2", _signing_certificate_v2(signer))


def signature_problem(
    certificate: x509.Certificate, signature: bytes, data: bytes, hash_algorithm: str
) -> str | None:
    """Whether `signature` (DER ECDSA or RSA PKCS#1 v1.5) over `data` verifies with the
    certificate's key; None if so, else why not."""
    return _signature_problem(
        certificate, signature, data, _hash(hash_algorithm), _is_rsa(certificate)
    )


def _hash(hash_algorithm: str) -> hashes.HashAlgorithm:
    if hash_algorithm not in HASHES:
        raise ValueError(f"unsupported hash algorithm {hash_algorithm!r}")
    return HASHES[hash_algorithm]()


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()


def _cms_time(moment: datetime) -> cms.Time:
    if moment.tzinfo is None:
        raise ValueError("signing_time must be timezone-aware")
    moment = moment.replace(microsecond=0)
    if moment.year in _UTC_TIME_YEARS:
        return cms.Time({"utc_time": moment})
    return cms.Time({"generalized_time": moment})


def _signing_certificate_v2(signer: asn1_x509.Certificate) -> tsp.SigningCertificateV2:
    # hashAlgorithm left out: SHA-256 is its DEFAULT, and DER omits defaults.
    cert_id = tsp.ESSCertIDv2(
        {
            "cert_hash": _digest(hashes.SHA256(), signer.dump()),
            "issuer_serial": {
                "issuer": [asn1_x509.GeneralName({"directory_name": signer.issuer})],
                "serial_number": signer.serial_number,
            },
        }
    )
    return tsp.SigningCertificateV2({"certs": [cert_id]})


# The SignedData is written as DER around parts that asn1crypto encodes: asn1crypto builds
# a structure from dicts, copies and re-tags every part on each assembly, which cost 5 ms a
# signature (fifty times the ECDSA signature itself). What is built here is only the
# tag-length framing of RFC 5652's fixed layout; tests/unit/test_cms.py checks the result
# byte for byte against asn1crypto assembling the same structure, and with openssl.
_SEQUENCE, _SET, _OCTET_STRING, _CONTEXT_0 = 0x30, 0x31, 0x04, 0xA0
_VERSION_1 = b"\x02\x01\x01"  # INTEGER 1: CMSVersion v1 (SignedData and SignerInfo)


def _der(tag: int, content: bytes) -> bytes:
    """One DER tag-length-value (definite length, short or long form)."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


def _attribute_der(name: str, value: Any) -> bytes:
    return bytes(cms.CMSAttribute({"type": name, "values": [value]}).dump())


_CONTENT_TYPE_DATA_ATTRIBUTE = _attribute_der("content_type", "data")
_ENCAPSULATED_DATA = bytes(cms.EncapsulatedContentInfo({"content_type": "data"}).dump())
_SIGNED_DATA_OID = bytes(cms.ContentType("signed_data").dump())


@functools.cache
def _digest_algorithm_der(hash_algorithm: str) -> bytes:
    # RFC 5754 s.2: the SHA-2 AlgorithmIdentifier parameters are absent.
    return bytes(algos.DigestAlgorithm({"algorithm": hash_algorithm, "parameters": None}).dump())


@functools.cache
def _signature_algorithm_der(rsa_key: bool, hash_algorithm: str) -> bytes:
    # RFC 5754 s.3.2 and RFC 3370 s.3.2: ecdsa-with-SHAx, and for RSA the conventional
    # rsaEncryption (the hash is the SignerInfo digestAlgorithm).
    algorithm = "rsassa_pkcs1v15" if rsa_key else _ECDSA_OIDS[hash_algorithm]
    return bytes(algos.SignedDigestAlgorithm({"algorithm": algorithm}).dump())


@dataclass(frozen=True)
class _SignerMaterial:
    """The DER parts of a SignedData that depend only on the signer's certificate and chain."""

    sid: bytes
    signing_certificate_v2_attribute: bytes
    certificates: bytes  # [0] IMPLICIT CertificateSet


@functools.lru_cache(maxsize=1024)
def _signer_material(certificate_der: bytes, chain_ders: tuple[bytes, ...]) -> _SignerMaterial:
    signer = asn1_x509.Certificate.load(certificate_der)
    sid = cms.SignerIdentifier(
        {
            "issuer_and_serial_number": {
                "issuer": signer.issuer,
                "serial_number": signer.serial_number,
            }
        }
    )
    unique = list(dict.fromkeys((certificate_der, *chain_ders)))
    return _SignerMaterial(
        sid=bytes(sid.dump()),
        signing_certificate_v2_attribute=_attribute_der(
            "signing_certificate_v2", _signing_certificate_v2(signer)
        ),
        # A SET OF: DER orders it by encoding, not signer first.
        certificates=_der(_CONTEXT_0, b"".join(sorted(unique))),
    )


def _is_rsa(certificate: x509.Certificate) -> bool:
    try:
        return isinstance(certificate.public_key(), rsa.RSAPublicKey)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _signature_problem(
    certificate: x509.Certificate,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | utils.Prehashed,
    rsa_expected: bool,
) -> str | None:
    """Whether `signature` over `data` verifies with the certificate's key, None if so."""
    try:
        key = certificate.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey) and not rsa_expected:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and rsa_expected:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            return "signature algorithm does not match the certificate's key"
    except InvalidSignature:
        return "signature does not verify"
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "signature or key is malformed"
    return None


def _parse_signed_data(der: bytes) -> _SignerData | str:
    """The one signer's data from a DER ContentInfo, or why it could not be read."""
    try:
        return _read_signed_data(der)
    # asn1crypto parses lazily and raises assorted exception types on malformed input,
    # anywhere a field is first touched; all of them mean the same: not a CMS we can read.
    except Exception:
        return "malformed CMS structure"


def _read_signed_data(der: bytes) -> _SignerData | str:
    content_info = cms.ContentInfo.load(der, strict=True)
    if content_info["content_type"].native != "signed_data":
        return "not a CMS SignedData"
    signed_data = content_info["content"]
    encapsulated = signed_data["encap_content_info"].native
    if encapsulated["content_type"] != "data" or encapsulated["content"] is not None:
        return "not a detached signature over data"
    if len(signed_data["signer_infos"]) != 1:
        return "expected exactly one signer"
    return _read_signer_info(signed_data, signed_data["signer_infos"][0])


def _read_signer_info(
    signed_data: cms.SignedData, signer_info: cms.SignerInfo
) -> _SignerData | str:
    # The signature covers the attributes as a universal SET (RFC 5652 s.5.4): the bytes
    # received, taken before anything below parses (and might re-encode) them.
    signed_attrs_der = signer_info["signed_attrs"].untag().dump()
    # Parsing the whole SignerInfo up front refuses malformed fields nothing else reads.
    info = signer_info.native
    sid = signer_info["sid"]
    # RFC 5652 s.5.3: version 1 goes with issuerAndSerialNumber.
    if info["version"] != "v1" or sid.name != "issuer_and_serial_number":
        return "signer must be identified by issuer and serial number"
    certificate = _find_signer(signed_data["certificates"], sid.chosen)
    if certificate is None:
        return "signer certificate not included"
    if not info["signed_attrs"]:
        return "no signed attributes"
    attributes: dict[str, list[Any]] = {}
    for attribute in info["signed_attrs"]:
        attributes.setdefault(attribute["type"], []).extend(attribute["values"])
    return _SignerData(
        certificate=certificate,
        digest_algorithm=info["digest_algorithm"]["algorithm"],
        signature_algorithm=info["signature_algorithm"]["algorithm"],
        signature=info["signature"],
        signed_attrs_der=signed_attrs_der,
        attributes=attributes,
    )


def _find_signer(
    certificates: cms.CertificateSet, sid: cms.IssuerAndSerialNumber
) -> x509.Certificate | None:
    for choice in certificates:
        if choice.name != "certificate":
            continue
        candidate = choice.chosen
        if (
            candidate.serial_number == sid["serial_number"].native
            and candidate.issuer == sid["issuer"]
        ):
            return x509.load_der_x509_certificate(candidate.dump())
    return None


def _single(attributes: dict[str, list[Any]], name: str) -> Any:
    values = attributes.get(name, [])
    return values[0] if len(values) == 1 else None


def _signing_time(attributes: dict[str, list[Any]]) -> datetime | None:
    value = _single(attributes, "signing_time")
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return None


def _cms_problem(parsed: _SignerData, digest: bytes, hash_algorithm: str) -> str | None:
    if hash_algorithm not in HASHES or parsed.digest_algorithm != hash_algorithm:
        return "hash algorithm does not match the signature"
    problem = _attributes_problem(parsed.attributes, digest)
    if problem:
        return problem
    rsa_expected = _rsa_signature_algorithm(parsed.signature_algorithm, hash_algorithm)
    if rsa_expected is None:
        return "unsupported signature algorithm"
    return _signature_problem(
        parsed.certificate,
        parsed.signature,
        parsed.signed_attrs_der,
        HASHES[hash_algorithm](),
        rsa_expected,
    ) or _signing_certificate_problem(parsed)


def _attributes_problem(attributes: dict[str, list[Any]], digest: bytes) -> str | None:
    for name in ("content_type", "message_digest"):
        if len(attributes.get(name, [])) != 1:
            return f"signed attribute {name} missing or repeated"
    if attributes.get("signing_time") and _signing_time(attributes) is None:
        return "signed attribute signing_time malformed or repeated"
    if _single(attributes, "content_type") != "data":
        return "signed content type is not data"
    if _single(attributes, "message_digest") != digest:
        return "signature is not over this document hash"
    return None


def _rsa_signature_algorithm(name: str, hash_algorithm: str) -> bool | None:
    """True for RSA PKCS#1 v1.5, False for ECDSA, None for anything else we do not accept."""
    if name in ("rsassa_pkcs1v15", f"{hash_algorithm}_rsa"):
        return True
    if name == f"{hash_algorithm}_ecdsa":
        return False
    return None


def _signing_certificate_problem(parsed: _SignerData) -> str | None:
    """RFC 5035: when present, signingCertificateV2 must name the signer certificate."""
    values = parsed.attributes.get("signing_certificate_v2", [])
    if not values:
        return None
    if len(values) != 1 or not values[0]["certs"]:
        return "signed attribute signing_certificate_v2 malformed or repeated"
    # RFC 5035 s.5.4: the first ESSCertIDv2 is the signer's certificate.
    cert_id = values[0]["certs"][0]
    hash_name = cert_id["hash_algorithm"]["algorithm"]
    if hash_name not in HASHES:
        return "unsupported hash in signing_certificate_v2"
    der = parsed.certificate.public_bytes(serialization.Encoding.DER)
    if cert_id["cert_hash"] != _digest(_hash(hash_name), der):
        return "signing certificate attribute names another certificate"
    return None
