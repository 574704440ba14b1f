"""Applications, enrolments, credentials, PINs and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.common import Pin, RequestModel, Rfc3339

KeyAlgorithmName = Literal["ecdsa-p256", "rsa-2048", "rsa-3072"]
ApplicationStatusName = Literal["awaiting_email_verification", "email_verified", "approved"]
CredentialStatusName = Literal[
    "pending_pin", "active", "locked", "revoked", "superseded", "expired"
]
RevocationReason = Literal[
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
]
EnrolmentOutcomeName = Literal[
    "enrolled", "already_enrolled", "already_roaming", "unknown_person", "invalid_mykad", "no_email"
]


class ApplicationOut(BaseModel):
    id: str
    mykad: str
    status: ApplicationStatusName
    origin: Literal["portal", "jdn_admin", "enrolment"]
    created_at: datetime
    email_verified_at: datetime | None
    approved_at: datetime | None
    credential_id: str | None = Field(description="The credential the CA issued on approval")
    destination: str | None = Field(description="The registered address, masked")


class ApprovalRequest(RequestModel):
    key_algorithm: KeyAlgorithmName | None = Field(
        default=None, description="Default: the service's ROAMSIGN_KEY_ALGORITHM"
    )


class TokenSentOut(BaseModel):
    purpose: Literal["application_email", "pin_setup", "pin_reset"]
    destination: str = Field(description="Where the token went, masked")
    expires_at: datetime


class EnrolmentRequest(RequestModel):
    mykads: list[str] = Field(
        min_length=1,
        max_length=1000,
        description="MyKad numbers of registered people (an invalid one is reported, not refused)",
    )

    @model_validator(mode="before")
    @classmethod
    def _bounded_items(cls, data: Any) -> Any:
        # Each item is reported on, never refused, but nothing longer than a MyKad is echoed.
        if isinstance(data, dict) and isinstance(data.get("mykads"), list):
            data = {
                **data,
                "mykads": [item[:20] if isinstance(item, str) else item for item in data["mykads"]],
            }
        return data


class EnrolmentResultOut(BaseModel):
    mykad: str = Field(description="Normalised; as given when it is not a valid MyKad")
    outcome: EnrolmentOutcomeName
    application_id: str | None = None


class EnrolmentReport(BaseModel):
    counts: dict[str, int] = Field(description="People per outcome")
    results: list[EnrolmentResultOut] = Field(description="One per MyKad given, in order")


class MediumRecord(RequestModel):
    medium: Literal["token", "softcert"] = "token"
    serial: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/-]+$")
    expires_at: Rfc3339 = Field(description="The end of the medium's validity")
    not_before: Rfc3339 | None = None


class CredentialOut(BaseModel):
    id: str
    medium: Literal["roaming", "token", "softcert"]
    status: CredentialStatusName = Field(
        description="As it stands now: a credential past its validity reads `expired`"
    )
    serial: str | None = Field(description="Certificate serial (hex) or the token's serial")
    key_algorithm: KeyAlgorithmName | None
    not_before: datetime | None
    not_after: datetime | None
    certificate: str | None = Field(description="PEM, for roaming credentials")
    locked_at: datetime | None
    revoked_at: datetime | None
    revocation_reason: str | None
    replaces_credential_id: str | None = Field(description="Renewal: the credential it replaces")
    created_at: datetime


class PinUpdate(RequestModel):
    """`{new_pin, current_pin}` to change the PIN, or `{new_pin, token}` with the PIN-setup or
    PIN-reset token from the e-mail."""

    new_pin: Pin
    current_pin: str | None = Field(default=None, pattern=r"^[0-9]{6,8}$")
    token: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_proof(self) -> PinUpdate:
        if (self.current_pin is None) == (self.token is None):
            raise ValueError("give exactly one of current_pin and token")
        return self


class RenewalRequest(RequestModel):
    key_algorithm: KeyAlgorithmName | None = Field(
        default=None, description="Default: the renewed credential's algorithm"
    )


class RevocationRequest(RequestModel):
    reason: RevocationReason = Field(description="An RFC 5280 CRL reason")


class AuditEventOut(BaseModel):
    id: int
    occurred_at: datetime
    action: str
    actor: str
    mykad_masked: str | None
    target_id: str | None
    outcome: str
    details: dict[str, str | int | bool | None]


class AuditPageOut(BaseModel):
    events: list[AuditEventOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end")
