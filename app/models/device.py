"""MyGPKI Mobile: devices, the OTP messages waiting for them and their signature nonces."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from app.models.base import id_column, timestamp


class DeviceStatus(StrEnum):
    PENDING_ACTIVATION = "pending_activation"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"


class DeactivationReason(StrEnum):
    REPLACED = "replaced"  # the person activated another device (FAQ 7, 16, 19)
    SUPERSEDED = "superseded"  # a newer registration came before this one was activated
    REMOVED_BY_DEVICE = "removed_by_device"  # the app deleted itself (iOS "delete account")
    ADMINISTRATOR = "administrator"  # JDN
    PHONE_CHANGED = "phone_changed"  # the registered number changed (FAQ 14, 17)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        # At most one active device per person (FAQ 7): the database settles two concurrent
        # activations, whatever the service read before.
        Index(
            "uq_devices_active_user",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    os_version: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(100))
    # Only the last four digits of the number it was registered with: enough to name it.
    phone_last4: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(20))
    # The app's ECDSA P-256 key (PEM), set at activation; it verifies every later request.
    public_key_pem: Mapped[str | None] = mapped_column(Text)
    # The e-mailed activation code, only as a keyed MAC bound to this device; cleared once used.
    activation_code_mac: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    activation_attempts: Mapped[int] = mapped_column(Integer, default=0)
    activation_expires_at: Mapped[datetime] = timestamp()
    created_at: Mapped[datetime] = timestamp()
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    deactivated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    deactivation_reason: Mapped[str | None] = mapped_column(String(24))
    # The last accepted signed request: an uninstalled app simply stops calling.
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DeviceMessageStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    EXPIRED = "expired"  # its window passed before the device fetched it
    WITHDRAWN = "withdrawn"  # the device was deactivated, or the request ended, first


class DeviceMessage(Base):
    """An OTP waiting for a device (store-and-forward), sealed until delivered, then wiped."""

    __tablename__ = "device_messages"
    __table_args__ = (
        Index("ix_device_messages_device_id_status", "device_id", "status"),
        Index("ix_device_messages_status_expires_at", "status", "expires_at"),
    )

    # Ascending in insertion order: the order the device receives its messages in.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    request_id: Mapped[str] = mapped_column(ForeignKey("signing_requests.id"), unique=True)
    # AES-GCM, bound to the device and the signing request; NULL once delivered or wiped.
    sealed_payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = timestamp()
    # The OTP's own window, counted from issue: a phone that was off gets nothing older.
    expires_at: Mapped[datetime] = timestamp()
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DeviceNonce(Base):
    """A signature nonce already accepted for a device; the primary key refuses it twice,
    across every worker. Kept only while a signature carrying it could still be fresh."""

    __tablename__ = "device_nonces"
    __table_args__ = (Index("ix_device_nonces_expires_at", "expires_at"),)

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = timestamp()
