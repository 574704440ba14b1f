"""CAdES signature time-stamps (ETSI EN 319 122-1 s.5.3, RFC 3161 Appendix A): proof that a
CMS signature existed at a trusted time, so it stays provable after its certificate expires
or is revoked.

The stamp is an unsigned attribute of the SignerInfo, over the signature value: adding it
changes nothing the signature covers, and the CMS still verifies as before.
"""

from __future__ import annotations

from collections.abc import Callable

from asn1crypto import cms, core
from cryptography.hazmat.primitives import hashes

from app.crypto import der
from app.crypto.tsa_token import TimestampTokenInvalid, read_timestamp_token

SIGNATURE_TIME_STAMP_OID = "1.2.840.113549.1.9.16.2.14"
_SIGNATURE_TIME_STAMP_OID_DER = bytes(cms.CMSAttributeType(SIGNATURE_TIME_STAMP_OID).dump())
_SIGNED_DATA_OID_DER = bytes(cms.ContentType("signed_data").dump())
_VERSION_5 = b"\x02\x01\x05"
# RFC 5940 s.4.1: OtherRevocationInfoFormat { id-ri-ocsp-response, OCSPResponse }, [1] IMPLICIT.
_OCSP_RESPONSE_FORMAT_DER = bytes(core.ObjectIdentifier("1.3.6.1.5.5.7.16.2").dump())
# (SHA-256 digest of the signature value) -> DER TimeStampToken (a ContentInfo), from a TSA.
TimestampRequester = Callable[[bytes], bytes]


class SignatureNotStampable(ValueError):
    """The CMS cannot be stamped: not a SignedData we can read, or the token does not match."""


def add_signature_timestamp(cms_der: bytes, request_timestamp: TimestampRequester) -> bytes:
    """`cms_der` with a signature time-stamp token added to each of its signers.

    `request_timestamp(digest)` gets the SHA-256 digest of the signature value (the message
    imprint) and returns the token, which must be over exactly that imprint and signed by a
    time-stamping certificate; whether the TSA is trusted is for the verifier. The signed
    parts are carried over byte for byte.
    """
    try:
        content_info = cms.ContentInfo.load(cms_der, strict=True)
        signed_data = content_info["content"]
        if content_info["content_type"].native != "signed_data":
            raise SignatureNotStampable("not a CMS SignedData")
        signer_infos = signed_data["signer_infos"]
        stamped = [_stamped(info, request_timestamp) for info in signer_infos]
    except (SignatureNotStampable, TimestampTokenInvalid):
        raise
    # asn1crypto parses lazily and raises assorted types on malformed input.
    except Exception as error:
        raise SignatureNotStampable("malformed CMS structure") from error
    if not stamped:
        raise SignatureNotStampable("the SignedData has no signer")
    # asn1crypto re-encodes a structure only where a child was replaced, so the parents are
    # set again from the bottom up; everything else is dumped from the bytes it was read from.
    signed_data["signer_infos"] = cms.SignerInfos(stamped)
    content_info["content"] = signed_data
    return bytes(content_info.dump())


def add_vouched_signature_timestamp(cms_der: bytes, request_timestamp: TimestampRequester) -> bytes:
    """`add_signature_timestamp` for a token the caller vouches for: one it made itself, or
    one `app.crypto.tsa_client.request_timestamp` checked (signature, imprint, nonce).

    The token is not read again, and a SignedData of one signer without unsigned attributes
    (what `app.crypto.cms.build_detached_cms` makes) is spliced by its DER framing: about a
    hundred times cheaper than asn1crypto re-encoding it. Other shapes take the checked path.
    """
    try:
        content_type, signed_data = _signed_data(cms_der)
        fields = der.children(signed_data)
        infos = der.children(der.split(fields[-1])[1])
        info_fields = der.children(der.split(infos[0])[1]) if len(infos) == 1 else []
    except (der.DerError, IndexError):
        info_fields = []
    if not info_fields or info_fields[-1][0] != der.OCTET_STRING:
        return add_signature_timestamp(cms_der, request_timestamp)
    token = request_timestamp(signature_imprint(der.split(info_fields[-1])[1]))
    attribute = der.tlv(der.SEQUENCE, _SIGNATURE_TIME_STAMP_OID_DER + der.tlv(der.SET, token))
    info = der.tlv(der.SEQUENCE, b"".join(info_fields) + der.tlv(der.CONTEXT_1, attribute))
    fields[-1] = der.tlv(der.SET, info)
    return _content_info(content_type, fields)


def add_validation_data(
    cms_der: bytes,
    certificates: list[bytes],
    ocsp_responses: list[bytes],
    crls: list[bytes],
) -> bytes:
    """`cms_der` with validation data for a verifier years from now (CAdES B-LT, ETSI EN 319
    122-1 s.5.5 / 319 122-2): the DER `certificates` added to SignedData.certificates (those
    already there are kept), and the DER OCSPResponses and CRLs in SignedData.crls
    (RevocationInfoChoices; an OCSP response as `other`, id-ri-ocsp-response, RFC 5940).

    Neither field is covered by the signature, so the signature and its time-stamp still
    verify. The version becomes 5, as RFC 5652 s.5.1 asks once `other` revocation info is
    present. Only a SignedData without crls, such as `build_detached_cms` makes, is accepted.
    """
    content_type, signed_data = _signed_data(cms_der)
    _version, digest_algorithms, encapsulated, *rest = der.children(signed_data)
    signer_infos = rest[-1]
    present = rest[:-1]
    if any(part[0] != der.CONTEXT_0 for part in present):
        raise SignatureNotStampable("the SignedData already carries revocation data")
    held = der.children(der.split(present[0])[1]) if present else []
    added = [c for c in dict.fromkeys(certificates) if c not in held]
    revocation = [
        der.tlv(der.CONTEXT_1, _OCSP_RESPONSE_FORMAT_DER + response) for response in ocsp_responses
    ] + list(crls)
    fields = [_VERSION_5, digest_algorithms, encapsulated]
    if held or added:
        fields.append(der.tlv(der.CONTEXT_0, b"".join([*held, *added])))
    if revocation:
        # RevocationInfoChoices is a SET OF: DER sorts its members by encoding.
        fields.append(der.tlv(der.CONTEXT_1, b"".join(sorted(revocation))))
    return _content_info(content_type, [*fields, signer_infos])


def _signed_data(cms_der: bytes) -> tuple[bytes, bytes]:
    """(contentType TLV, SignedData contents) of a DER ContentInfo."""
    tag, contents = der.split(cms_der)
    content_type, explicit = der.children(contents)
    if tag != der.SEQUENCE or content_type != _SIGNED_DATA_OID_DER:
        raise der.DerError("not a SignedData ContentInfo")
    tag, signed = der.split(der.split(explicit)[1])
    if tag != der.SEQUENCE:
        raise der.DerError("not a SignedData")
    return content_type, signed


def _content_info(content_type: bytes, signed_data_fields: list[bytes]) -> bytes:
    signed_data = der.tlv(der.SEQUENCE, b"".join(signed_data_fields))
    return der.tlv(der.SEQUENCE, content_type + der.tlv(der.CONTEXT_0, signed_data))


def signature_timestamp_tokens(cms_der: bytes) -> list[bytes]:
    """The DER signature time-stamp tokens of each signer, in signer order, flattened."""
    content_info = cms.ContentInfo.load(cms_der, strict=True)
    tokens: list[bytes] = []
    for info in content_info["content"]["signer_infos"]:
        for attribute in info["unsigned_attrs"] or []:
            if attribute["type"].dotted == SIGNATURE_TIME_STAMP_OID:
                tokens.extend(value.dump() for value in attribute["values"])
    return tokens


def signature_imprint(signature: bytes) -> bytes:
    """The message imprint a signature time-stamp covers: SHA-256 of the signature value."""
    hasher = hashes.Hash(hashes.SHA256())
    hasher.update(signature)
    return hasher.finalize()


def _stamped(signer_info: cms.SignerInfo, request_timestamp: TimestampRequester) -> cms.SignerInfo:
    imprint = signature_imprint(signer_info["signature"].native)
    token_der = request_timestamp(imprint)
    token = read_timestamp_token(token_der)
    if (token.hash_algorithm, token.hashed_message) != ("sha256", imprint):
        raise SignatureNotStampable("the time-stamp token is over another imprint")
    attribute = cms.CMSAttribute(
        {"type": SIGNATURE_TIME_STAMP_OID, "values": [cms.ContentInfo.load(token_der)]}
    )
    unsigned = list(signer_info["unsigned_attrs"] or [])
    signer_info["unsigned_attrs"] = cms.CMSAttributes([*unsigned, attribute])
    return signer_info
