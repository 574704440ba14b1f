"""MyGPKI Mobile devices: registration, activation, one active device per person, removal.

- Registration (`app.services.devices.registration`) e-mails an activation code to the
  person's registered address; activation (`app.services.devices.activation`) exchanges it for
  the device's public key and deactivates the person's previous device.
- A device removes itself (iOS "delete account", FAQ 15); JDN lists and deactivates devices;
  a new phone number deactivates them (`app.services.devices.deactivation`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.db import after_commit
from app.errors import NotFound
from app.models import User
from app.models.device import DeactivationReason, Device, DeviceNonce
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.devices.activation import Activation, DeviceActivator
from app.services.devices.activation_code import ActivationCodeSender
from app.services.devices.auth import DeviceAuthenticator, SignedRequest
from app.services.devices.deactivation import deactivate, notify_devices
from app.services.devices.messages import MOBILE_APP_ACTOR, wipe_expired
from app.services.devices.registration import DeviceRegistrar, DeviceRegistration
from app.services.mail.notices import NoticeContext
from app.settings import Settings


def mask_phone_end(last4: str) -> str:
    return f"****{last4}"


class DeviceService:
    """The device use cases, in the caller's session; never commits."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: Secrets,
        audit: AuditLog,
        notices: NoticeContext,
        code_sender: ActivationCodeSender,
    ) -> None:
        self.session = session
        self.settings = settings
        self.audit = audit
        self.registration = DeviceRegistrar(
            session, settings=settings, keys=keys, audit=audit, code_sender=code_sender
        )
        self.activation = DeviceActivator(
            session, settings=settings, keys=keys, audit=audit, notices=notices
        )

    def register(self, registration: DeviceRegistration, now: datetime) -> Device:
        """A pending device and its activation code e-mailed, or the one refusal that says
        nothing about the person (`phone_mismatch`)."""
        return self.registration.register(registration, now)

    def activate(self, device_id: str, code: str, public_key_pem: str, now: datetime) -> Activation:
        """The device made the person's only active one, or a refusal (their order:
        `DeviceActivator.activate`)."""
        return self.activation.activate(device_id, code, public_key_pem, now)

    # -- removal ------------------------------------------------------------------------------

    def remove_self(self, device_id: str, request: SignedRequest, now: datetime) -> None:
        """The signed request of a device deleting its account (iOS, FAQ 15)."""
        device = DeviceAuthenticator(
            self.session, self.settings.device_signature_max_skew_seconds
        ).authenticate(request, device_id, now)
        deactivate(
            self.session, [Device.id == device.id], DeactivationReason.REMOVED_BY_DEVICE, now
        )
        self.audit.record(
            now=now,
            action="device.deactivated",
            actor=MOBILE_APP_ACTOR,
            mykad=device.mykad,
            target_id=device.id,
            outcome=DeactivationReason.REMOVED_BY_DEVICE,
        )
        after_commit(self.session, lambda: notify_devices([device.id]))

    def deactivate_by_administrator(self, caller: Caller, device_id: str, now: datetime) -> Device:
        """JDN deactivates a device (active or still pending); one already deactivated is
        answered as it is."""
        device = self.session.get(Device, device_id)
        if device is None:
            raise NotFound("no such device")
        user = self.session.get(User, device.user_id)
        assert user is not None  # foreign key
        if deactivate(
            self.session, [Device.id == device.id], DeactivationReason.ADMINISTRATOR, now
        ):
            self.audit.record(
                now=now,
                action="device.deactivated",
                actor=caller.name,
                mykad=user.mykad,
                target_id=device.id,
                outcome=DeactivationReason.ADMINISTRATOR,
            )
            after_commit(self.session, lambda: notify_devices([device.id]))
        self.session.refresh(device)
        return device

    def of_person(self, mykad: str) -> list[Device]:
        """Every device the person registered, newest first (JDN)."""
        user = self.session.scalar(select(User).where(User.mykad == mykad))
        if user is None:
            raise NotFound("no such person")
        return list(
            self.session.scalars(
                select(Device)
                .where(Device.user_id == user.id)
                .order_by(Device.created_at.desc(), Device.id)
            )
        )


def purge_device_leftovers(session: Session, now: datetime) -> str:
    """For the periodic jobs: wipe expired messages no device fetched, forget nonces that can
    no longer matter. Returns a one-line summary."""
    wiped = wipe_expired(session, now)
    nonces = session.execute(
        delete(DeviceNonce)
        .where(DeviceNonce.expires_at < now)
        .returning(DeviceNonce.nonce)
        .execution_options(synchronize_session=False)
    ).all()
    return f"device leftovers: {wiped} expired messages wiped, {len(nonces)} nonces forgotten"
