"""Signing requests (one OTP each) and the one signature each may produce."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from app.models.base import id_column, timestamp


class RequestStatus(StrEnum):
    PENDING = "pending"
    SIGNED = "signed"
    EXPIRED = "expired"
    LOCKED = "locked"
    CANCELLED = "cancelled"


class SigningRequest(Base):
    __tablename__ = "signing_requests"
    __table_args__ = (
        # One pending OTP per person and document hash, whoever asked: the database, not a
        # read-then-insert, settles two concurrent requests.
        Index(
            "uq_signing_requests_pending_hash",
            "user_id",
            "document_hash",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_signing_requests_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = id_column()
    signer_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id"), index=True)
    document_hash: Mapped[str] = mapped_column(String(128))  # lowercase hex
    hash_algorithm: Mapped[str] = mapped_column(String(8))
    document_name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(8))
    destination: Mapped[str] = mapped_column(String(254))  # masked, as shown to the caller
    signature_format: Mapped[str] = mapped_column(String(8))
    # HMAC of the OTP bound to this request, credential, hash, algorithm and signer.
    otp_mac: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(12), default=RequestStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = timestamp()
    expires_at: Mapped[datetime] = timestamp()
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # CSC credentials/authorize: when the OTP was exchanged for a SAD (the OTP is spent from
    # then on), the SAD's HMAC bound to the same request, credential, hash and signer (the SAD
    # itself is never stored), and when the SAD stops being accepted by signatures/signHash.
    authorized_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sad_mac: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    sad_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    def usable_until(self) -> datetime:
        """Until when the request can still produce its signature: the OTP's window, or the
        SAD's lifetime when the OTP was exchanged for one late in that window."""
        if self.sad_expires_at is not None and self.sad_expires_at > self.expires_at:
            return self.sad_expires_at
        return self.expires_at


class Signature(Base):
    __tablename__ = "signatures"

    id: Mapped[str] = id_column()
    # Unique: the last line of defence of "one OTP, one signature".
    request_id: Mapped[str] = mapped_column(ForeignKey("signing_requests.id"), unique=True)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    signature_format: Mapped[str] = mapped_column(String(8))
    signature_algorithm: Mapped[str] = mapped_column(String(40))
    certificate_serial: Mapped[str] = mapped_column(String(40))
    signed_at: Mapped[datetime] = timestamp()
