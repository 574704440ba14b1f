"""The signing flow."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from app.schemas.common import DocumentName, MyKad, RequestModel
from app.validation import decode_document_hash

HashAlgorithm = Literal["sha256", "sha384", "sha512"]
SignatureFormat = Literal["cms", "raw", "cades-lt"]
Channel = Literal["email", "mobile", "auto"]
RequestStatusName = Literal["pending", "signed", "expired", "locked", "cancelled"]


class _HashedDocument(RequestModel):
    # Declared before document_hash: the hash's length rule depends on it.
    hash_algorithm: HashAlgorithm = "sha256"
    document_hash: str = Field(
        max_length=200,
        description="Hex (either case) or padded base64 of the digest; answered as lowercase hex",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )

    @field_validator("document_hash")
    @classmethod
    def _normalise_hash(cls, value: str, info: ValidationInfo) -> str:
        algorithm = info.data.get("hash_algorithm")
        if algorithm is None:
            return value  # the algorithm itself is invalid and reported on its own
        return decode_document_hash(value, algorithm).hex()


class SigningRequestCreate(_HashedDocument):
    mykad: MyKad
    document_name: DocumentName
    channel: Channel = "auto"
    signature_format: SignatureFormat = Field(
        default="cms",
        description=(
            "`cms`: a detached CMS SignedData whose messageDigest is the document hash, with a "
            "CAdES signature time-stamp. `cades-lt`: the same CMS carrying the validation data "
            "of its signing moment too (CAdES B-LT, ETSI EN 319 122): the TSA's certificate in "
            "SignedData.certificates, and in SignedData.crls the OCSP responses for the "
            "signer's and the TSA's certificates (RFC 5940 `other` revocation info) and the "
            "root's CRL, so that it can be validated after the certificate expired or was "
            "revoked, without asking roamsign. `raw`: a signature over the document hash."
        ),
    )


class SigningRequestCreated(BaseModel):
    id: str
    status: RequestStatusName
    channel: Literal["email", "mobile"]
    destination: str = Field(description="Where the OTP went, masked")
    expires_at: datetime
    attempts_remaining: int


class SignatureSubmit(RequestModel):
    otp: str = Field(min_length=1, max_length=16, description="The 6-digit OTP the person received")
    pin: str = Field(min_length=1, max_length=16, description="The credential's PIN")


class SignatureOut(BaseModel):
    request_id: str
    signature: str = Field(description="Base64 (standard, padded)")
    signature_format: SignatureFormat
    signature_algorithm: str
    certificate: str = Field(description="The signer's certificate, PEM")
    certificate_chain: list[str] = Field(description="Issuing CA, then root, PEM")
    signed_at: datetime


class SigningRequestOut(BaseModel):
    id: str
    status: RequestStatusName
    channel: Literal["email", "mobile"]
    destination: str
    document_name: str
    document_hash: str
    hash_algorithm: HashAlgorithm
    signature_format: SignatureFormat
    created_at: datetime
    expires_at: datetime
    attempts_remaining: int
    signature: SignatureOut | None = None


class VerificationRequest(_HashedDocument):
    signature: str = Field(max_length=40000, description="Base64 of the signature")
    signature_format: SignatureFormat = "cms"
    certificate: str | None = Field(
        default=None, max_length=20000, description="PEM; required for raw signatures"
    )


class SignerOut(BaseModel):
    name: str
    mykad_masked: str | None
    certificate_serial: str


CertificateStatus = Literal["good", "revoked", "expired", "unknown"]


class TimestampOut(BaseModel):
    time: datetime = Field(description="The time-stamp token's genTime: when the signature existed")
    tsa: str = Field(description="The time-stamping authority's name (its certificate's CN)")
    tsa_trusted: bool = Field(
        description="The TSA's certificate chains to roamsign's CA and was valid at `time`"
    )


class VerificationOut(BaseModel):
    valid: bool
    signer: SignerOut | None
    signed_at: datetime | None
    certificate_status: CertificateStatus
    revoked_at: datetime | None
    reason: str | None = Field(default=None, description="Why the signature is not valid")
    timestamp: TimestampOut | None = Field(
        default=None,
        description="The CAdES signature time-stamp (cms, cades-lt) that verifies and covers "
        "the signature value; null without one",
    )
    certificate_status_at_timestamp: CertificateStatus | None = Field(
        default=None,
        description="The signer certificate's status at the time-stamp's time: a certificate "
        "revoked or expired since then still made a good signature",
    )
