"""Activating a device: its code exchanged for its public key, one active device per person.

The code is single use, has limited tries, expires, and is kept only as a keyed MAC; from then
on the device signs its requests (see `app.services.devices.auth`). The person's previous
device, on any platform, is deactivated in the same transaction (FAQ 7, 19), and the person is
told by e-mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.secrets import macs_equal
from app.db import after_commit, keep_changes
from app.errors import (
    ActivationCodeConsumed,
    ActivationCodeExpired,
    ActivationCodeRejected,
    ActivationLocked,
    Conflict,
    NotFound,
    ValidationFailed,
)
from app.metrics import DEVICE_ACTIVATIONS
from app.models import User
from app.models.device import DeactivationReason, Device, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.devices.activation_code import activation_code_mac
from app.services.devices.auth import load_device_public_key
from app.services.devices.deactivation import deactivate, notify_devices
from app.services.devices.eligibility import PLATFORM_NAMES
from app.services.devices.messages import MOBILE_APP_ACTOR
from app.services.mail.notices import NoticeContext
from app.services.mail.outbox import Outbox
from app.services.mail.texts.devices import DeviceActivatedNotice
from app.settings import Settings

_CODE_FORMAT = re.compile(r"^[0-9]{6}$")


@dataclass(frozen=True)
class Activation:
    device: Device
    replaced_device_ids: tuple[str, ...]


class DeviceActivator:
    """Activates devices in the caller's session; never commits."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: Secrets,
        audit: AuditLog,
        notices: NoticeContext,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.notices = notices
        self.audit = audit

    def activate(self, device_id: str, code: str, public_key_pem: str, now: datetime) -> Activation:
        """Answers, in order: `not_found`, `validation_error` (not counted), `otp_consumed`
        (used or replaced), `request_locked`, `otp_expired`, then the check itself, which
        counts one try: a wrong code answers `authorization_failed` with `attempts_remaining`.
        """
        device = self.session.get(Device, device_id)
        if device is None:
            raise NotFound("no such device")
        if not _CODE_FORMAT.match(code):
            raise ValidationFailed("code must be the 6 digits of the e-mail", "/code")
        try:
            load_device_public_key(public_key_pem)
        except ValueError as error:
            raise ValidationFailed(str(error), "/public_key") from None
        user = self.session.get(User, device.user_id)
        assert user is not None  # foreign key
        self._refuse_unusable_code(device, user, now)

        attempts = self._count_attempt(device, user, now)
        given = activation_code_mac(self.keys.activation_code_mac, device.id, code)
        if not macs_equal(device.activation_code_mac, given):
            remaining = self.settings.device_activation_max_attempts - attempts
            self._refused(device, user, "wrong_code", now, attempts_remaining=remaining)
            keep_changes(self.session)
            raise ActivationCodeRejected(
                "the activation code is not correct", attempts_remaining=remaining
            )

        replaced = self._make_only_active(device, user, public_key_pem, now)
        self.session.refresh(device)
        self._tell_person(user, device, replaced, now)
        self.audit.record(
            now=now,
            action="device.activated",
            actor=MOBILE_APP_ACTOR,
            mykad=user.mykad,
            target_id=device.id,
            details={"platform": device.platform, "replaced_devices": len(replaced)},
        )
        for replaced_id in replaced:
            self.audit.record(
                now=now,
                action="device.deactivated",
                actor=MOBILE_APP_ACTOR,
                mykad=user.mykad,
                target_id=replaced_id,
                outcome=DeactivationReason.REPLACED,
                details={"replaced_by": device.id},
            )
        after_commit(self.session, DEVICE_ACTIVATIONS.labels("activated").inc)
        after_commit(self.session, lambda: notify_devices(replaced))
        return Activation(device, tuple(replaced))

    def _refuse_unusable_code(self, device: Device, user: User, now: datetime) -> None:
        if device.status != DeviceStatus.PENDING_ACTIVATION or device.activation_code_mac is None:
            self._refused(device, user, "consumed", now)
            keep_changes(self.session)
            raise ActivationCodeConsumed(
                "this registration's code was already used, or a newer registration replaced it"
            )
        if device.activation_attempts >= self.settings.device_activation_max_attempts:
            self._refused(device, user, "locked", now)
            keep_changes(self.session)
            raise ActivationLocked("too many wrong activation codes; register the device again")
        if now >= device.activation_expires_at:
            self._refused(device, user, "expired", now)
            keep_changes(self.session)
            raise ActivationCodeExpired(
                "the activation code has expired; register the device again"
            )

    def _count_attempt(self, device: Device, user: User, now: datetime) -> int:
        """Count the try before comparing anything, atomically: parallel guesses cannot go
        past the limit. Committed with the refusal (`keeps_changes`)."""
        counted = self.session.execute(
            update(Device)
            .where(
                Device.id == device.id,
                Device.status == DeviceStatus.PENDING_ACTIVATION,
                Device.activation_attempts < self.settings.device_activation_max_attempts,
                Device.activation_expires_at > now,
            )
            .values(activation_attempts=Device.activation_attempts + 1)
            .returning(Device.activation_attempts)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if counted is None:
            # Another try changed the device between our read and this update.
            self.session.refresh(device)
            self._refuse_unusable_code(device, user, now)
            self._refused(device, user, "locked", now)
            keep_changes(self.session)
            raise ActivationLocked("too many wrong activation codes; register the device again")
        return counted

    def _make_only_active(
        self, device: Device, user: User, public_key_pem: str, now: datetime
    ) -> list[str]:
        """Deactivate the person's active device and activate this one. The partial unique
        index settles a concurrent activation for the same person: the loser's savepoint
        fails once the winner commits, and it deactivates the winner in turn (the latest
        activation wins, as FAQ 7 says). A device no longer pending is refused, and then
        nothing is deactivated."""
        for _ in range(3):
            try:
                with self.session.begin_nested():
                    replaced = deactivate(
                        self.session,
                        [Device.user_id == user.id, Device.status == DeviceStatus.ACTIVE],
                        DeactivationReason.REPLACED,
                        now,
                    )
                    activated = self.session.execute(
                        update(Device)
                        .where(
                            Device.id == device.id,
                            Device.status == DeviceStatus.PENDING_ACTIVATION,
                        )
                        .values(
                            status=DeviceStatus.ACTIVE,
                            public_key_pem=public_key_pem,
                            activated_at=now,
                            activation_code_mac=None,
                        )
                        .returning(Device.id)
                        .execution_options(synchronize_session=False)
                    ).first()
                    if activated is None:
                        # Raised inside the savepoint, which takes the deactivations back:
                        # the refusal is committed (its counted try) but replaces nothing.
                        keep_changes(self.session)
                        raise ActivationCodeConsumed("this registration's code was already used")
            except IntegrityError:
                continue
            return replaced
        raise Conflict("another device of this person is being activated at this moment; retry")

    def _tell_person(self, user: User, device: Device, replaced: list[str], now: datetime) -> None:
        if not user.email:
            return
        previous = [self.session.get(Device, device_id) for device_id in replaced]
        notice = DeviceActivatedNotice(
            name=user.name,
            platform=PLATFORM_NAMES[device.platform],
            os_version=device.os_version,
            activated_at=now,
            replaced_platforms=tuple(PLATFORM_NAMES[d.platform] for d in previous if d),
            device_id=device.id,
        )
        Outbox(self.session, self.notices.seal_key).enqueue(
            purpose="device_activated",
            recipient=user.email,
            subject=notice.subject(),
            body=notice.body(self.notices.zone),
            now=now,
        )

    def _refused(
        self,
        device: Device,
        user: User,
        outcome: str,
        now: datetime,
        attempts_remaining: int | None = None,
    ) -> None:
        DEVICE_ACTIVATIONS.labels(outcome).inc()
        details: dict[str, str | int | None] = {}
        if attempts_remaining is not None:
            details["attempts_remaining"] = attempts_remaining
        self.audit.record(
            now=now,
            action="device.activation_refused",
            actor=MOBILE_APP_ACTOR,
            mykad=user.mykad,
            target_id=device.id,
            outcome=outcome,
            details=details,
        )
