"""People and the credentials (media) they hold."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UtcDateTime
from app.models.base import id_column, timestamp


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = id_column()
    mykad: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(16))
    agency: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = timestamp()
    updated_at: Mapped[datetime] = timestamp()
    # Failed OTP/PIN checks in a row, across requests; past a threshold signing is held back.
    consecutive_failed_checks: Mapped[int] = mapped_column(Integer, default=0)
    signing_held_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # When the current address took effect: no PIN reset goes to a freshly changed address.
    email_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    credentials: Mapped[list[Credential]] = relationship(back_populates="user")


class Medium(StrEnum):
    ROAMING = "roaming"
    TOKEN = "token"  # noqa: S105 - a kind of medium, not a secret
    SOFTCERT = "softcert"


class CredentialStatus(StrEnum):
    PENDING_PIN = "pending_pin"
    ACTIVE = "active"
    LOCKED = "locked"
    REVOKED = "revoked"
    # Renewed: the new credential's PIN is set, so this one never signs again (its key is
    # destroyed); its certificate stays valid for the signatures it made.
    SUPERSEDED = "superseded"


class Credential(Base):
    __tablename__ = "credentials"
    __table_args__ = (
        # A token (or softcert) is recorded once; roaming credentials have no such serial.
        Index("uq_credentials_medium_token_serial", "medium", "token_serial", unique=True),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    medium: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    key_algorithm: Mapped[str | None] = mapped_column(String(16))
    # The private key, sealed by the key store (never in clear); None for tokens and softcerts.
    key_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    certificate_serial: Mapped[str | None] = mapped_column(String(40), unique=True)
    token_serial: Mapped[str | None] = mapped_column(String(64))
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime())
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime())
    pin_mac: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(40))
    # Renewal: the credential this one replaces once its PIN is set.
    replaces_credential_id: Mapped[str | None] = mapped_column(ForeignKey("credentials.id"))
    # The "expires in 30 days" e-mail went out (sent once per credential).
    expiry_notice_sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = timestamp()
    updated_at: Mapped[datetime] = timestamp()

    user: Mapped[User] = relationship(back_populates="credentials")
