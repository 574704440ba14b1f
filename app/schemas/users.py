"""People."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from app.schemas.common import Agency, Email, MyKad, PersonName, Phone, RequestModel


class UserCreate(RequestModel):
    mykad: MyKad
    name: PersonName
    email: Email | None = None
    phone: Phone | None = None
    agency: Agency


class UserUpdate(RequestModel):
    """Only the fields given change. A new `email` takes effect once the token sent to it is
    confirmed; `phone: null` removes the number."""

    email: Email | None = Field(
        default=None, description="New address: a confirmation token is sent to it"
    )
    phone: Phone | None = None
    agency: Agency | None = Field(
        default=None, description="Transfer to another agency; credentials are untouched"
    )

    @field_validator("email", "agency")
    @classmethod
    def _not_removed(cls, value: str | None) -> str:
        # Runs only for values given: an explicit null is refused, an absent field is not.
        if value is None:
            raise ValueError("cannot be removed, only replaced")
        return value


class TokenConfirmation(RequestModel):
    token: str = Field(
        min_length=1, max_length=200, description="The token from the e-mail (`Token:` line)"
    )


class UserOut(BaseModel):
    id: str
    mykad: str
    name: str
    email: str | None
    phone: str | None
    agency: str
    created_at: datetime
    pending_email: str | None = Field(
        default=None, description="A new address waiting for its confirmation token"
    )
