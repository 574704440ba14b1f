"""Registering a device: eligibility, then the MyKad and phone together, then a code e-mailed.

Registration needs no key, so it reveals nothing: eligibility first (FAQ 20, 23), then the MyKad
and phone together; an unknown MyKad and a phone that is not the registered one get the same
answer after the same work (FAQ 14, 17).

Rate limits: every attempt counts against the client address and against that address's tries
for that MyKad (the guesser's own budget), counted before anything is looked up, so they bound
the guessing whatever the answer would be. Only a registration with the right phone counts
against the MyKad itself (taken, not hit: checked first, counted only when let through), so
wrong phones sent from elsewhere can never block the person's own registration. The price:
guesses for one MyKad are bounded per address, not in total; a phone number is one of some
10^8, and a right guess gets the guesser a code e-mailed to the person, not a device.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.secrets import generate_otp
from app.db import after_commit, keep_changes
from app.errors import DeviceNotEligible, RateLimited, UnregisteredPhone
from app.metrics import DEVICE_REGISTRATIONS
from app.models import User
from app.models.base import new_id
from app.models.device import DeactivationReason, Device, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.devices.activation_code import ActivationCodeSender, activation_code_mac
from app.services.devices.deactivation import deactivate
from app.services.devices.eligibility import Platform, check_eligibility
from app.services.devices.messages import MOBILE_APP_ACTOR
from app.services.rate_limits import Hit, RateLimit, RateLimiter
from app.settings import Settings

# Compared against when the MyKad is unknown, so both refusals do the same work.
_NO_REGISTERED_PHONE = "+60000000000"
_PHONE_MISMATCH = (
    "the phone number is not the one registered in MyGPKI for this MyKad; update the number "
    "in the MyGPKI portal first, then register the device"
)


@dataclass(frozen=True)
class DeviceRegistration:
    mykad: str  # normalised
    phone: str  # E.164
    platform: Platform
    os_version: str
    has_sim: bool
    model: str | None
    client_address: str


class DeviceRegistrar:
    """Registers devices in the caller's session; never commits."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: Secrets,
        audit: AuditLog,
        code_sender: ActivationCodeSender,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.audit = audit
        self.code_sender = code_sender

    def register(self, registration: DeviceRegistration, now: datetime) -> Device:
        """A pending device and its activation code e-mailed, or the one refusal that says
        nothing about the person (`phone_mismatch`)."""
        try:
            check_eligibility(registration.platform, registration.os_version, registration.has_sim)
        except DeviceNotEligible:
            DEVICE_REGISTRATIONS.labels("not_eligible").inc()
            raise
        limiter = RateLimiter(self.session, self.keys.subject_ref)
        self._count_attempt(limiter, registration, now)

        user = self.session.scalar(select(User).where(User.mykad == registration.mykad))
        registered_phone = user.phone if user is not None and user.phone else _NO_REGISTERED_PHONE
        phone_matches = hmac.compare_digest(registered_phone.encode(), registration.phone.encode())
        if user is None or not phone_matches:
            self.audit.record(
                now=now,
                action="device.registration_refused",
                actor=MOBILE_APP_ACTOR,
                outcome="phone_mismatch",
                mykad=registration.mykad,
                details={"platform": registration.platform},
            )
            DEVICE_REGISTRATIONS.labels("phone_mismatch").inc()
            keep_changes(self.session)
            raise UnregisteredPhone(
                _PHONE_MISMATCH, errors=[{"pointer": "/phone", "detail": _PHONE_MISMATCH}]
            )

        self._count_registration(limiter, registration, now)
        # A newer registration ends the older ones still waiting for their code.
        superseded = deactivate(
            self.session,
            [Device.user_id == user.id, Device.status == DeviceStatus.PENDING_ACTIVATION],
            DeactivationReason.SUPERSEDED,
            now,
        )
        device = Device(
            id=new_id(),
            user_id=user.id,
            platform=registration.platform,
            os_version=registration.os_version,
            model=registration.model,
            phone_last4=registration.phone[-4:],
            status=DeviceStatus.PENDING_ACTIVATION,
            activation_attempts=0,
            activation_expires_at=now
            + timedelta(seconds=self.settings.device_activation_ttl_seconds),
            created_at=now,
        )
        code = generate_otp()
        device.activation_code_mac = activation_code_mac(
            self.keys.activation_code_mac, device.id, code
        )
        self.session.add(device)
        self.session.flush()
        self.code_sender.send(user=user, device=device, code=code, now=now)
        self.audit.record(
            now=now,
            action="device.registered",
            actor=MOBILE_APP_ACTOR,
            mykad=user.mykad,
            target_id=device.id,
            details={
                "platform": device.platform,
                "os_version": device.os_version,
                "superseded_registrations": len(superseded),
            },
        )
        after_commit(self.session, DEVICE_REGISTRATIONS.labels("registered").inc)
        return device

    def _count_attempt(
        self, limiter: RateLimiter, registration: DeviceRegistration, now: datetime
    ) -> None:
        """One more attempt from this address, and from this address for this MyKad: both
        counted before either is checked, and the counts survive the refusal that follows."""
        settings = self.settings
        window = settings.device_registration_window_seconds
        per_address = RateLimit(
            "device_registration:address", settings.device_registrations_per_address, window
        )
        per_mykad_address = RateLimit(
            "device_registration:mykad_address",
            settings.device_registrations_per_mykad_per_address,
            window,
        )
        try:
            limiter.hit(
                now,
                Hit(
                    per_mykad_address,
                    f"{registration.mykad}:{registration.client_address}",
                    "too many device registrations for this MyKad from this address; "
                    "try again later",
                ),
                Hit(
                    per_address,
                    registration.client_address,
                    "too many device registrations from this address; try again later",
                ),
            )
        except RateLimited:
            DEVICE_REGISTRATIONS.labels("rate_limited").inc()
            raise

    def _count_registration(
        self, limiter: RateLimiter, registration: DeviceRegistration, now: datetime
    ) -> None:
        """One more registration with the right phone for this MyKad (activation codes
        e-mailed to the person), counted only if let through."""
        per_mykad = RateLimit(
            "device_registration:mykad",
            self.settings.device_registrations_per_mykad,
            self.settings.device_registration_window_seconds,
        )
        try:
            limiter.take(
                now,
                Hit(
                    per_mykad,
                    registration.mykad,
                    "too many device registrations for this MyKad; try again later",
                ),
            )
        except RateLimited:
            DEVICE_REGISTRATIONS.labels("rate_limited").inc()
            raise
