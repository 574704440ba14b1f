"""Reading an RFC 3161 time-stamp token: what it says, and whether its TSA really signed it.

For the client side: the stamp we get back from a remote TSA, and the stamps found in a CMS
signature at verification time. `read_timestamp_token` checks the token's own signature and
the TSA certificate's extended key usage; whether that certificate chains to a TSA we trust,
and was valid and unrevoked at `gen_time`, is the caller's question
(app/crypto/ca.verify_certificate_chain answers the first part).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.crypto.cms import signature_problem
from app.crypto.keystore import HASHES


class TimestampTokenInvalid(ValueError):
    """The bytes are not a time-stamp token, or its signature does not hold."""


@dataclass(frozen=True)
class TimestampToken:
    """What a verified token says. `tsa_certificate` signed it (chain not checked)."""

    gen_time: datetime
    serial_number: int
    policy: str
    hash_algorithm: str
    hashed_message: bytes
    nonce: int | None
    tsa_certificate: x509.Certificate


def read_timestamp_token(
    der: bytes, certificates: Sequence[x509.Certificate] = ()
) -> TimestampToken:
    """Read and check a DER TimeStampToken (a ContentInfo holding SignedData over TSTInfo).

    The TSA certificate is looked up among the token's own certificates and `certificates`
    (for a token issued without them). Raises `TimestampTokenInvalid` for anything wrong.
    """
    try:
        return _read(der, certificates)
    except TimestampTokenInvalid:
        raise
    # asn1crypto parses lazily and raises assorted types on malformed input.
    except Exception as error:
        raise TimestampTokenInvalid("malformed time-stamp token") from error


def _read(der: bytes, extra_certificates: Sequence[x509.Certificate]) -> TimestampToken:
    content_info = cms.ContentInfo.load(der, strict=True)
    if content_info["content_type"].native != "signed_data":
        raise TimestampTokenInvalid("not a CMS SignedData")
    signed_data = content_info["content"]
    encapsulated = signed_data["encap_content_info"]
    if encapsulated["content_type"].native != "tst_info":
        raise TimestampTokenInvalid("the signed content is not a TSTInfo")
    tst_info_der = bytes(encapsulated["content"].contents)
    tst_info = encapsulated["content"].parsed.native
    if len(signed_data["signer_infos"]) != 1:
        raise TimestampTokenInvalid("a time-stamp token has exactly one signer")
    signer_info = signed_data["signer_infos"][0]
    hash_algorithm = signer_info["digest_algorithm"]["algorithm"].native
    if hash_algorithm not in HASHES:
        raise TimestampTokenInvalid("unsupported digest algorithm")
    attributes = {a["type"].native: a["values"].native for a in signer_info["signed_attrs"]}
    if attributes.get("content_type") != ["tst_info"]:
        raise TimestampTokenInvalid("signed content type is not TSTInfo")
    if attributes.get("message_digest") != [_digest(hash_algorithm, tst_info_der)]:
        raise TimestampTokenInvalid("message digest does not match the TSTInfo")
    tsa = _signer_certificate(signed_data, signer_info, extra_certificates)
    problem = signature_problem(
        tsa,
        signer_info["signature"].native,
        signer_info["signed_attrs"].untag().dump(),
        hash_algorithm,
    )
    if problem:
        raise TimestampTokenInvalid(f"token signature: {problem}")
    _check_tsa_certificate(tsa)
    imprint = tst_info["message_imprint"]
    return TimestampToken(
        gen_time=tst_info["gen_time"],
        serial_number=tst_info["serial_number"],
        policy=tst_info["policy"],
        hash_algorithm=imprint["hash_algorithm"]["algorithm"],
        hashed_message=imprint["hashed_message"],
        nonce=tst_info["nonce"],
        tsa_certificate=tsa,
    )


def _signer_certificate(
    signed_data: cms.SignedData,
    signer_info: cms.SignerInfo,
    extra_certificates: Sequence[x509.Certificate],
) -> x509.Certificate:
    sid = signer_info["sid"]
    if sid.name != "issuer_and_serial_number":
        raise TimestampTokenInvalid("signer must be identified by issuer and serial number")
    issuer_der = sid.chosen["issuer"].dump()
    serial = sid.chosen["serial_number"].native
    embedded = [
        x509.load_der_x509_certificate(choice.chosen.dump())
        for choice in signed_data["certificates"] or []
        if choice.name == "certificate"
    ]
    for candidate in [*embedded, *extra_certificates]:
        if candidate.serial_number == serial and candidate.issuer.public_bytes() == issuer_der:
            return candidate
    raise TimestampTokenInvalid("TSA certificate not found")


def _check_tsa_certificate(certificate: x509.Certificate) -> None:
    # RFC 3161 s.2.3: the TSA certificate's only extended key usage is timeStamping, critical.
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as error:
        raise TimestampTokenInvalid("TSA certificate lacks extended key usage") from error
    if not usage.critical or list(usage.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TimestampTokenInvalid("TSA certificate is not for time-stamping only")


def _digest(hash_algorithm: str, data: bytes) -> bytes:
    hasher = hashes.Hash(HASHES[hash_algorithm]())
    hasher.update(data)
    return hasher.finalize()
