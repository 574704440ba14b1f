"""The time-stamping authority (RFC 3161): read a query, answer it with a signed token, or
refuse it in the protocol's own shape.

Pure functions of (query, time, certificates, `sign`): the TSA key stays in the key store or
the token, and `sign(digest, hash_algorithm)` signs the digest of the token's signed
attributes. A query we refuse raises `TimestampQueryRejected`, whose `failure` is the
PKIFailureInfo bit that `rejection_response` puts in the reply. `reply_to_query` is the whole
exchange, bytes in and bytes out, for an `application/timestamp-query` endpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.crypto import der
from app.crypto.cms import SignCallback, signature_problem, signing_certificate_v2_attribute
from app.crypto.keystore import HASHES

# asn1crypto's names for the PKIFailureInfo bits of RFC 3161 s.2.4.2.
FailureInfo = Literal[
    "bad_alg",
    "bad_request",
    "bad_data_format",
    "time_not_available",
    "unaccepted_policy",
    "unaccepted_extensions",
    "add_info_not_available",
    "system_failure",
]


class TimeStampResp(tsp.TimeStampResp):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 3161 s.2.4.2's TimeStampResp, whose timeStampToken is OPTIONAL (absent unless the
    status is granted); asn1crypto 1.5 declares it required, and cannot write a rejection."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class TimestampQueryRejected(Exception):
    """A time-stamp query the TSA refuses; answer it with `rejection_response(failure)`."""

    def __init__(self, failure: FailureInfo, reason: str) -> None:
        super().__init__(reason)
        self.failure: FailureInfo = failure
        self.reason = reason


@dataclass(frozen=True)
class TimestampQuery:
    """A parsed TimeStampReq. `message_imprint_der` is echoed byte for byte in the token."""

    hash_algorithm: str
    hashed_message: bytes
    message_imprint_der: bytes
    nonce: int | None
    cert_req: bool
    policy: str | None


def parse_timestamp_query(der: bytes) -> TimestampQuery:
    """Read a DER TimeStampReq; raise `TimestampQueryRejected` for one we will not answer.

    Garbage is badDataFormat, a hash other than SHA-256/384/512 (SHA-1 included) badAlg, an
    imprint of the wrong length badDataFormat, a version other than 1 badRequest, and any
    extension unacceptedExtension (we support none).
    """
    try:
        request = tsp.TimeStampReq.load(der, strict=True)
        native = request.native
    # asn1crypto raises assorted types on malformed input; all mean "not a TimeStampReq".
    except Exception as error:
        raise TimestampQueryRejected("bad_data_format", "not a DER TimeStampReq") from error
    if native["version"] != "v1":
        raise TimestampQueryRejected("bad_request", "unsupported TimeStampReq version")
    if native["extensions"]:
        raise TimestampQueryRejected("unaccepted_extensions", "extensions are not supported")
    imprint = native["message_imprint"]
    algorithm = imprint["hash_algorithm"]
    if algorithm["algorithm"] not in HASHES or algorithm["parameters"] is not None:
        raise TimestampQueryRejected("bad_alg", "the hash must be SHA-256, SHA-384 or SHA-512")
    hash_algorithm: str = algorithm["algorithm"]
    if len(imprint["hashed_message"]) != HASHES[hash_algorithm]().digest_size:
        raise TimestampQueryRejected("bad_data_format", "imprint length does not match its hash")
    return TimestampQuery(
        hash_algorithm=hash_algorithm,
        hashed_message=imprint["hashed_message"],
        message_imprint_der=request["message_imprint"].dump(),
        nonce=native["nonce"],
        cert_req=bool(native["cert_req"]),
        policy=native["req_policy"],
    )


def timestamp_response(
    query: TimestampQuery,
    *,
    now: datetime,
    serial: int,
    policy_oid: str,
    tsa_cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    sign: SignCallback,
    hash_algorithm: str = "sha256",
    accuracy_seconds: int = 1,
) -> bytes:
    """A granted TimeStampResp (DER) for `query`, stamped `now` (cut to whole seconds).

    `serial` must be unique among this TSA's tokens (RFC 3161 s.2.4.2; a random 159-bit
    number will do). The token's signed attributes are contentType, messageDigest and
    signingCertificateV2 naming `tsa_cert`; `tsa_cert` and `chain` travel in the token when
    the query asked (certReq). Raises `TimestampQueryRejected` (unacceptedPolicy) for a query
    that asks for a policy other than `policy_oid`.
    """
    if query.policy is not None and query.policy != policy_oid:
        raise TimestampQueryRejected("unaccepted_policy", "the TSA does not offer this policy")
    tst_info = _tst_info_der(query, policy_oid, serial, now, accuracy_seconds, tsa_cert)
    certificates = [tsa_cert, *chain] if query.cert_req else []
    token = _signed_token_der(tst_info, tsa_cert, certificates, sign, hash_algorithm)
    return der.tlv(der.SEQUENCE, _GRANTED_STATUS + token)


def rejection_response(failure: FailureInfo, text: str | None = None) -> bytes:
    """A TimeStampResp (DER) with status rejection and `failure` as its failInfo."""
    status: dict[str, object] = {"status": "rejection", "fail_info": {failure}}
    if text:
        status["status_string"] = [text]
    return bytes(TimeStampResp({"status": status}).dump())


def reply_to_query(
    der: bytes,
    *,
    now: datetime,
    serial: int,
    policy_oid: str,
    tsa_cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    sign: SignCallback,
) -> bytes:
    """The TimeStampResp for a DER TimeStampReq: granted, or rejection with its failInfo.

    Never raises for what the client sent; errors of our own (the token refusing to sign)
    propagate, for the caller to answer systemFailure or 503.
    """
    try:
        query = parse_timestamp_query(der)
        return timestamp_response(
            query,
            now=now,
            serial=serial,
            policy_oid=policy_oid,
            tsa_cert=tsa_cert,
            chain=chain,
            sign=sign,
        )
    except TimestampQueryRejected as rejected:
        return rejection_response(rejected.failure, rejected.reason)


def timestamp_query(
    hashed_message: bytes, hash_algorithm: str, *, nonce: int | None, cert_req: bool = True
) -> bytes:
    """A DER TimeStampReq for a digest, as a client sends it to a TSA."""
    if hash_algorithm not in HASHES:
        raise ValueError(f"unsupported hash algorithm {hash_algorithm!r}")
    if len(hashed_message) != HASHES[hash_algorithm]().digest_size:
        raise ValueError("digest length does not match the hash algorithm")
    return bytes(
        tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": {
                    "hash_algorithm": {"algorithm": hash_algorithm},
                    "hashed_message": hashed_message,
                },
                "nonce": nonce,
                "cert_req": cert_req,
            }
        ).dump()
    )


# The token is written as DER framing around parts asn1crypto encodes once (primitives, the
# per-certificate parts cached): building it from dicts with asn1crypto cost 3 ms a stamp.
# tests/unit/test_tsa.py checks the result is the DER asn1crypto itself writes for it.
_GRANTED_STATUS = der.tlv(der.SEQUENCE, bytes(core.Integer(0).dump()))
_VERSION_1 = bytes(core.Integer(1).dump())
_VERSION_3 = bytes(core.Integer(3).dump())
_TST_INFO_OID = bytes(cms.ContentType("tst_info").dump())
_SIGNED_DATA_OID = bytes(cms.ContentType("signed_data").dump())
_CONTENT_TYPE_TST_INFO = bytes(
    cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}).dump()
)


def _tst_info_der(
    query: TimestampQuery,
    policy_oid: str,
    serial: int,
    now: datetime,
    accuracy_seconds: int,
    tsa_cert: x509.Certificate,
) -> bytes:
    """RFC 3161 s.2.4.2's TSTInfo; ordering FALSE (the DEFAULT) and extensions left out."""
    parts = [
        _VERSION_1,
        _oid(policy_oid),
        query.message_imprint_der,
        bytes(core.Integer(serial).dump()),
        bytes(core.GeneralizedTime(_whole_seconds(now)).dump()),
        der.tlv(der.SEQUENCE, bytes(core.Integer(accuracy_seconds).dump())),
    ]
    if query.nonce is not None:
        parts.append(bytes(core.Integer(query.nonce).dump()))
    # tsa [0] GeneralName, a directoryName [4]: both EXPLICIT (a CHOICE and a Name).
    parts.append(der.tlv(der.CONTEXT_0, der.tlv(0xA4, _issuer_parts(_der_of(tsa_cert))[1])))
    return der.tlv(der.SEQUENCE, b"".join(parts))


def _signed_token_der(
    tst_info: bytes,
    tsa_cert: x509.Certificate,
    certificates: Sequence[x509.Certificate],
    sign: SignCallback,
    hash_algorithm: str,
) -> bytes:
    """RFC 3161 s.2.4.2: a SignedData whose eContent is the TSTInfo, one signer, the TSA."""
    message_digest = bytes(
        cms.CMSAttribute(
            {"type": "message_digest", "values": [_digest(hash_algorithm, tst_info)]}
        ).dump()
    )
    # DER orders a SET OF by encoding, and the signature covers the attributes as a SET
    # (RFC 5652 s.5.4); verifiers that re-encode them (openssl) would see another order.
    attributes = b"".join(
        sorted((_CONTENT_TYPE_TST_INFO, message_digest, signing_certificate_v2_attribute(tsa_cert)))
    )
    signature = sign(_digest(hash_algorithm, der.tlv(der.SET, attributes)), hash_algorithm)
    problem = signature_problem(tsa_cert, signature, der.tlv(der.SET, attributes), hash_algorithm)
    if problem:
        raise ValueError(f"the TSA signature does not match its certificate: {problem}")
    tsa_der = _der_of(tsa_cert)
    digest_algorithm = _digest_algorithm_der(hash_algorithm)
    signer_info = der.tlv(
        der.SEQUENCE,
        _VERSION_1
        + _issuer_parts(tsa_der)[0]
        + digest_algorithm
        + der.tlv(der.CONTEXT_0, attributes)
        + _signature_algorithm_der(_signature_algorithm(tsa_cert, hash_algorithm))
        + der.tlv(der.OCTET_STRING, signature),
    )
    encapsulated = der.tlv(
        der.SEQUENCE,
        _TST_INFO_OID + der.tlv(der.CONTEXT_0, der.tlv(der.OCTET_STRING, tst_info)),
    )
    fields = _VERSION_3 + der.tlv(der.SET, digest_algorithm) + encapsulated
    if certificates:
        unique = list(dict.fromkeys(_der_of(c) for c in certificates))
        # A SET OF in DER is sorted by encoding.
        fields += der.tlv(der.CONTEXT_0, b"".join(sorted(unique)))
    fields += der.tlv(der.SET, signer_info)
    signed_data = der.tlv(der.SEQUENCE, fields)
    return der.tlv(der.SEQUENCE, _SIGNED_DATA_OID + der.tlv(der.CONTEXT_0, signed_data))


@functools.lru_cache(maxsize=16)
def _issuer_parts(certificate_der: bytes) -> tuple[bytes, bytes]:
    """(IssuerAndSerialNumber, subject Name) of a certificate, DER."""
    certificate = asn1_x509.Certificate.load(certificate_der)
    tbs = certificate["tbs_certificate"]
    issuer_and_serial = der.tlv(
        der.SEQUENCE, bytes(tbs["issuer"].dump()) + bytes(tbs["serial_number"].dump())
    )
    return issuer_and_serial, bytes(tbs["subject"].dump())


@functools.cache
def _oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


@functools.cache
def _digest_algorithm_der(hash_algorithm: str) -> bytes:
    return bytes(algos.DigestAlgorithm({"algorithm": hash_algorithm}).dump())


@functools.cache
def _signature_algorithm_der(name: str) -> bytes:
    return bytes(algos.SignedDigestAlgorithm({"algorithm": name}).dump())


def _signature_algorithm(certificate: x509.Certificate, hash_algorithm: str) -> str:
    if isinstance(certificate.public_key(), rsa.RSAPublicKey):
        return "rsassa_pkcs1v15"
    return f"{hash_algorithm}_ecdsa"


def _digest(hash_algorithm: str, data: bytes) -> bytes:
    hasher = hashes.Hash(HASHES[hash_algorithm]())
    hasher.update(data)
    return hasher.finalize()


def _der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _whole_seconds(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.replace(microsecond=0)
