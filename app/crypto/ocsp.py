"""OCSP (RFC 6960): read a request, answer it for one CA, signed by its delegated responder.

Pure functions of (request, status lookup, certificates, `sign`, time). The response is
assembled with asn1crypto rather than cryptography's OCSPResponseBuilder, which wants the
responder's private key (ours stays in the key store or the token) and stamps producedAt from
the OS clock (ours is the caller's `now`). asn1crypto also reads requests that ask about
several certificates at once, which cryptography's parser refuses.

A request that cannot be read raises `OcspRequestMalformed`; answer it with
`error_response("malformed_request")`. `reply_to_request` is the whole exchange.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from asn1crypto import core, ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.crypto.cms import SignCallback, signature_problem

CertStatus = Literal["good", "revoked", "unknown"]
ErrorStatus = Literal["malformed_request", "internal_error", "try_later", "unauthorized"]
# CertID hashes identify the issuer; SHA-1 is what most clients (openssl too) send.
_CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_MAX_NONCE = 128
# RFC 5280 reason names (as app/crypto/ca.build_crl takes them) to asn1crypto's.
_REASONS = {
    "unspecified": "unspecified",
    "keyCompromise": "key_compromise",
    "cACompromise": "ca_compromise",
    "affiliationChanged": "affiliation_changed",
    "superseded": "superseded",
    "cessationOfOperation": "cessation_of_operation",
    "certificateHold": "certificate_hold",
    "removeFromCRL": "remove_from_crl",
    "privilegeWithdrawn": "privilege_withdrawn",
    "aACompromise": "aa_compromise",
}


class SerialStatus(NamedTuple):
    """What the CA knows of a serial: `revoked_at` and `reason` (an RFC 5280 name) when
    revoked; `unknown` for a serial it never issued."""

    status: CertStatus
    revoked_at: datetime | None = None
    reason: str | None = None


StatusLookup = Callable[[int], tuple[CertStatus, datetime | None, str | None]]


class OcspRequestMalformed(Exception):
    """The body is not a DER OCSPRequest; answer `error_response("malformed_request")`."""


@dataclass(frozen=True)
class CertificateQuery:
    """One certificate asked about: its CertID as received, which the answer echoes."""

    cert_id_der: bytes
    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int


@dataclass(frozen=True)
class OcspRequest:
    queries: tuple[CertificateQuery, ...]
    nonce: bytes | None


def parse_ocsp_request(der: bytes) -> OcspRequest:
    """Read a DER OCSPRequest (one or more certificates, an optional nonce)."""
    try:
        request = ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        native = tbs.native  # parses every field, so malformed parts fail here
    # asn1crypto raises assorted types on malformed input; all mean "not an OCSPRequest".
    except Exception as error:
        raise OcspRequestMalformed("not a DER OCSPRequest") from error
    if native["version"] != "v1" or not native["request_list"]:
        raise OcspRequestMalformed("an OCSPRequest v1 asking about at least one certificate")
    queries = tuple(
        CertificateQuery(
            cert_id_der=item["req_cert"].dump(),
            hash_algorithm=item["req_cert"]["hash_algorithm"]["algorithm"].native,
            issuer_name_hash=item["req_cert"]["issuer_name_hash"].native,
            issuer_key_hash=item["req_cert"]["issuer_key_hash"].native,
            serial_number=item["req_cert"]["serial_number"].native,
        )
        for item in tbs["request_list"]
    )
    nonce = None
    for extension in native["request_extensions"] or []:
        if extension["extn_id"] == "nonce":
            nonce = extension["extn_value"]
    # RFC 8954 s.2.1: a nonce longer than 128 octets is refused with malformedRequest.
    if nonce is not None and not 1 <= len(nonce) <= _MAX_NONCE:
        raise OcspRequestMalformed("the nonce must be 1 to 128 octets")
    return OcspRequest(queries=queries, nonce=nonce)


def ocsp_response(
    request: OcspRequest,
    lookup: StatusLookup,
    issuer_cert: x509.Certificate,
    responder_cert: x509.Certificate,
    sign: SignCallback,
    now: datetime,
    next_update: datetime | None,
    hash_algorithm: str = "sha256",
) -> bytes:
    """A DER OCSPResponse for `request` about certificates `issuer_cert` issued.

    Each certificate's status comes from `lookup(serial)`; thisUpdate and producedAt are
    `now`. The nonce, when asked, is echoed. `responder_cert` is the delegated responder
    (issued by `issuer_cert`, EKU OCSPSigning) or `issuer_cert` itself, and `sign` its key.
    A request about another issuer's certificate gets `unauthorized` (RFC 6960 s.2.3).
    """
    if not _answers_for(responder_cert, issuer_cert):
        raise ValueError("the responder certificate was not issued by this CA")
    if not all(_issued_by(query, issuer_cert) for query in request.queries):
        return error_response("unauthorized")
    responses = [
        _single_response(query, SerialStatus(*lookup(query.serial_number)), now, next_update)
        for query in request.queries
    ]
    responder = asn1_x509.Certificate.load(_der(responder_cert))
    data: dict[str, object] = {
        # RFC 6960 s.4.2.1: KeyHash is the SHA-1 of the responder's public key bits.
        "responder_id": {"by_key": _hash(hashes.SHA1(), _key_bits(responder))},  # noqa: S303
        "produced_at": _whole_seconds(now),
        "responses": responses,
    }
    if request.nonce is not None:
        data["response_extensions"] = [{"extn_id": "nonce", "extn_value": request.nonce}]
    tbs = ocsp.ResponseData(data).dump()
    signature = sign(_digest(hash_algorithm, tbs), hash_algorithm)
    problem = signature_problem(responder_cert, signature, tbs, hash_algorithm)
    if problem:
        raise ValueError(f"the OCSP signature does not match the responder: {problem}")
    basic = ocsp.BasicOCSPResponse(
        {
            "tbs_response_data": ocsp.ResponseData.load(tbs),
            "signature_algorithm": {
                "algorithm": _signature_algorithm(responder_cert, hash_algorithm)
            },
            "signature": signature,
            "certs": [responder] if responder_cert != issuer_cert else None,
        }
    )
    return bytes(
        ocsp.OCSPResponse(
            {
                "response_status": "successful",
                "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
            }
        ).dump()
    )


def error_response(status: ErrorStatus) -> bytes:
    """A DER OCSPResponse with an error status and no response bytes (RFC 6960 s.2.3)."""
    return bytes(ocsp.OCSPResponse({"response_status": status}).dump())


def reply_to_request(
    der: bytes,
    lookup: StatusLookup,
    issuer_cert: x509.Certificate,
    responder_cert: x509.Certificate,
    sign: SignCallback,
    now: datetime,
    next_update: datetime | None,
) -> bytes:
    """The OCSPResponse for a DER OCSPRequest; malformedRequest for what cannot be read."""
    try:
        request = parse_ocsp_request(der)
    except OcspRequestMalformed:
        return error_response("malformed_request")
    return ocsp_response(request, lookup, issuer_cert, responder_cert, sign, now, next_update)


def certificate_ids(issuer_cert: x509.Certificate, hash_algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of RFC 6960 s.4.1.1 for certificates `issuer_cert`
    issued: hashes of its subject name and of its public key's BIT STRING value."""
    certificate = asn1_x509.Certificate.load(_der(issuer_cert))
    algorithm = _CERT_ID_HASHES[hash_algorithm]()
    return _hash(algorithm, certificate.subject.dump()), _hash(algorithm, _key_bits(certificate))


def _key_bits(certificate: asn1_x509.Certificate) -> bytes:
    key = certificate["tbs_certificate"]["subject_public_key_info"]["public_key"]
    # The BIT STRING's contents start with its unused-bits count, not part of the value.
    return bytes(key.contents[1:])


def _issued_by(query: CertificateQuery, issuer_cert: x509.Certificate) -> bool:
    if query.hash_algorithm not in _CERT_ID_HASHES:
        return False
    name_hash, key_hash = certificate_ids(issuer_cert, query.hash_algorithm)
    return (query.issuer_name_hash, query.issuer_key_hash) == (name_hash, key_hash)


def _single_response(
    query: CertificateQuery,
    status: SerialStatus,
    now: datetime,
    next_update: datetime | None,
) -> ocsp.SingleResponse:
    cert_status: ocsp.CertStatus
    if status.status == "good":
        cert_status = ocsp.CertStatus({"good": core.Null()})
    elif status.status == "unknown":
        cert_status = ocsp.CertStatus({"unknown": core.Null()})
    else:
        if status.revoked_at is None:
            raise ValueError("a revoked serial needs its revocation time")
        revoked: dict[str, object] = {"revocation_time": _whole_seconds(status.revoked_at)}
        if status.reason not in (None, "unspecified"):
            revoked["revocation_reason"] = _REASONS[str(status.reason)]
        cert_status = ocsp.CertStatus({"revoked": revoked})
    single: dict[str, object] = {
        "cert_id": ocsp.CertId.load(query.cert_id_der),
        "cert_status": cert_status,
        "this_update": _whole_seconds(now),
    }
    if next_update is not None:
        single["next_update"] = _whole_seconds(next_update)
    return ocsp.SingleResponse(single)


def _answers_for(responder_cert: x509.Certificate, issuer_cert: x509.Certificate) -> bool:
    return responder_cert == issuer_cert or _directly_issued(
        _der(responder_cert), _der(issuer_cert)
    )


@functools.lru_cache(maxsize=16)
def _directly_issued(certificate_der: bytes, issuer_der: bytes) -> bool:
    # Cached: the same responder answers every request until it is re-issued.
    certificate = x509.load_der_x509_certificate(certificate_der)
    try:
        certificate.verify_directly_issued_by(x509.load_der_x509_certificate(issuer_der))
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _signature_algorithm(certificate: x509.Certificate, hash_algorithm: str) -> str:
    if isinstance(certificate.public_key(), rsa.RSAPublicKey):
        return f"{hash_algorithm}_rsa"
    return f"{hash_algorithm}_ecdsa"


def _digest(hash_algorithm: str, data: bytes) -> bytes:
    return _hash(_CERT_ID_HASHES[hash_algorithm](), data)


def _hash(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _whole_seconds(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.replace(microsecond=0)
