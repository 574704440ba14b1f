"""Ending devices: they fetch nothing more, and a waiting long-poll of theirs ends at once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, delete, update
from sqlalchemy.orm import Session

from app.db import after_commit
from app.models import User
from app.models.device import DeactivationReason, Device, DeviceNonce, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.devices.messages import withdraw_pending
from app.services.devices.signals import MESSAGE_SIGNALS


def deactivate(
    session: Session, criteria: list[ColumnElement[bool]], reason: str, now: datetime
) -> list[str]:
    """Deactivate the matching devices that are not yet; they fetch nothing more."""
    deactivated = list(
        session.execute(
            update(Device)
            .where(
                *criteria,
                Device.status.in_([DeviceStatus.PENDING_ACTIVATION, DeviceStatus.ACTIVE]),
            )
            .values(
                status=DeviceStatus.DEACTIVATED,
                deactivated_at=now,
                deactivation_reason=reason,
                activation_code_mac=None,
            )
            .returning(Device.id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    if deactivated:
        withdraw_pending(session, deactivated, now)
        session.execute(
            delete(DeviceNonce)
            .where(DeviceNonce.device_id.in_(deactivated))
            .execution_options(synchronize_session=False)
        )
    return deactivated


def notify_devices(device_ids: list[str]) -> None:
    # A waiting long-poll of a deactivated device ends now rather than at its deadline.
    for device_id in device_ids:
        MESSAGE_SIGNALS.notify(device_id)


def deactivate_for_phone_change(
    session: Session, audit: AuditLog, user_id: str, now: datetime, actor: str
) -> list[str]:
    """The lifecycle's hook: a new phone number deactivates the person's devices (the active
    one and any still waiting for activation), registered against the old number (FAQ 14,
    17). Returns the ids deactivated; call it in the transaction that changes the number."""
    deactivated = deactivate(
        session, [Device.user_id == user_id], DeactivationReason.PHONE_CHANGED, now
    )
    if deactivated:
        user = session.get(User, user_id)
        for device_id in deactivated:
            audit.record(
                now=now,
                action="device.deactivated",
                actor=actor,
                mykad=user.mykad if user else None,
                target_id=device_id,
                outcome=DeactivationReason.PHONE_CHANGED,
            )
        after_commit(session, lambda: notify_devices(deactivated))
    return deactivated
