"""MyGPKI Mobile devices: registration, activation, one active device per person, removal.

- Registration needs no key, so it reveals nothing: eligibility first (FAQ 20, 23), then the
  MyKad and phone together; an unknown MyKad and a phone that is not the registered one get
  the same answer after the same work (FAQ 14, 17). It is rate-limited per MyKad and per
  client address. An activation code goes to the person's registered e-mail address.
- Activation exchanges that code (single use, limited tries, expiring, kept only as a keyed
  MAC) for the device's public key; from then on the device signs its requests (see
  `app.services.devices.auth`). The person's previous device, on any platform, is deactivated
  in the same transaction (FAQ 7, 19), and the person is told by e-mail.
- A device removes itself (iOS "delete account", FAQ 15); JDN lists and deactivates devices;
  a new phone number deactivates them (`deactivate_for_phone_change`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.crypto.keys import DerivedKeys
from app.crypto.secrets import generate_otp, macs_equal
from app.db import after_commit, keep_changes
from app.errors import (
    ActivationCodeConsumed,
    ActivationCodeExpired,
    ActivationCodeRejected,
    ActivationLocked,
    Conflict,
    DeviceNotEligible,
    NoEmailAddress,
    NotFound,
    RateLimited,
    UnregisteredPhone,
    ValidationFailed,
)
from app.metrics import DEVICE_ACTIVATIONS, DEVICE_REGISTRATIONS
from app.models import User
from app.models.base import new_id
from app.models.device import (
    DeactivationReason,
    Device,
    DeviceNonce,
    DeviceStatus,
)
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.devices.auth import DeviceAuthenticator, SignedRequest, load_device_public_key
from app.services.devices.messages import (
    MESSAGE_SIGNALS,
    MOBILE_APP_ACTOR,
    wipe_expired,
    withdraw_pending,
)
from app.services.mail.outbox import Outbox
from app.services.rate_limits import Hit, RateLimit, RateLimiter
from app.settings import Settings

logger = logging.getLogger("roamsign.devices")

Platform = Literal["android", "ios", "harmonyos"]
# FAQ 23: Android 8 or later, iOS 12 or later, HarmonyOS (Android-based) in any version.
MINIMUM_MAJOR_VERSION: dict[str, int] = {"android": 8, "ios": 12, "harmonyos": 0}
PLATFORM_NAMES: dict[str, str] = {"android": "Android", "ios": "iOS", "harmonyos": "HarmonyOS"}
OS_VERSION_PATTERN = re.compile(r"^[0-9]{1,3}(?:\.[0-9]{1,4}){0,3}$")
_CODE_FORMAT = re.compile(r"^[0-9]{6}$")
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


@dataclass(frozen=True)
class Activation:
    device: Device
    replaced_device_ids: tuple[str, ...]


def check_eligibility(platform: str, os_version: str, has_sim: bool) -> None:
    """The FAQ's device rules, each refusal naming its rule (`device_not_eligible`)."""
    name = PLATFORM_NAMES[platform]
    minimum = MINIMUM_MAJOR_VERSION[platform]
    if int(os_version.split(".", 1)[0]) < minimum:
        raise _not_eligible(
            f"MyGPKI Mobile needs {name} {minimum} or later; this device runs {name} {os_version}",
            "/os_version",
        )
    if not has_sim:
        raise _not_eligible(
            "MyGPKI Mobile needs a device with a SIM card (a phone, or a tablet with a SIM)",
            "/has_sim",
        )


def _not_eligible(detail: str, pointer: str) -> DeviceNotEligible:
    return DeviceNotEligible(detail, errors=[{"pointer": pointer, "detail": detail}])


def activation_code_mac(key: bytes, device_id: str, code: str) -> bytes:
    """The code's MAC, bound to its device: a code for one registration opens no other."""
    message = b"".join(
        len(part).to_bytes(4, "big") + part for part in (device_id.encode(), code.encode())
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def mask_phone_end(last4: str) -> str:
    return f"****{last4}"


class ActivationCodeSender(Protocol):
    """How an activation code reaches the person: e-mail today; SMS can plug in here later.

    Called in the registration's transaction; an implementation queues, it never waits on a
    network. Raises a `DomainError` when the person cannot be reached this way.
    """

    def send(self, *, user: User, device: Device, code: str, now: datetime) -> None: ...


class EmailActivationCodeSender:
    """Queues the code in the outbox, to the person's registered address only."""

    def __init__(self, session: Session, seal_key: bytes) -> None:
        self.session = session
        self._seal_key = seal_key

    def send(self, *, user: User, device: Device, code: str, now: datetime) -> None:
        if not user.email:
            raise NoEmailAddress(
                "this person has no registered e-mail address for the activation code"
            )
        notice = ActivationCodeNotice(
            code=code,
            name=user.name,
            platform=PLATFORM_NAMES[device.platform],
            os_version=device.os_version,
            expires_at=device.activation_expires_at,
            device_id=device.id,
        )
        Outbox(self.session, self._seal_key).enqueue(
            purpose="device_activation",
            recipient=user.email,
            subject=notice.subject(),
            body=notice.body(),
            now=now,
            not_after=device.activation_expires_at,
        )


class DeviceService:
    """The device use cases, in the caller's session; never commits."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: DerivedKeys,
        audit: AuditLog,
        code_sender: ActivationCodeSender,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.audit = audit
        self.code_sender = code_sender

    # -- registration -------------------------------------------------------------------------

    def register(self, registration: DeviceRegistration, now: datetime) -> Device:
        """A pending device and its activation code e-mailed, or the one refusal that says
        nothing about the person (`phone_mismatch`)."""
        try:
            check_eligibility(registration.platform, registration.os_version, registration.has_sim)
        except DeviceNotEligible:
            DEVICE_REGISTRATIONS.labels("not_eligible").inc()
            raise
        self._count_registration(registration, now)

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

        # A newer registration ends the older ones still waiting for their code.
        superseded = _deactivate(
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

    def _count_registration(self, registration: DeviceRegistration, now: datetime) -> None:
        """One more registration for this MyKad and this address; both are counted before
        either is checked, and the count survives the refusal that follows."""
        window = self.settings.device_registration_window_seconds
        per_mykad = RateLimit(
            "device_registration:mykad", self.settings.device_registrations_per_mykad, window
        )
        per_address = RateLimit(
            "device_registration:address", self.settings.device_registrations_per_address, window
        )
        try:
            RateLimiter(self.session, self.keys.subject_ref).hit(
                now,
                Hit(
                    per_mykad,
                    registration.mykad,
                    "too many device registrations for this MyKad; try again later",
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

    # -- activation ---------------------------------------------------------------------------

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
        after_commit(self.session, lambda: _notify_devices(replaced))
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
        past the limit. Committed with the refusal (`keep_changes`)."""
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
                    replaced = _deactivate(
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
        Outbox(self.session, self.keys.outbox_seal).enqueue(
            purpose="device_activated",
            recipient=user.email,
            subject=notice.subject(),
            body=notice.body(),
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

    # -- removal ------------------------------------------------------------------------------

    def remove_self(self, device_id: str, request: SignedRequest, now: datetime) -> None:
        """The signed request of a device deleting its account (iOS, FAQ 15)."""
        device = DeviceAuthenticator(
            self.session, self.settings.device_signature_max_skew_seconds
        ).authenticate(request, device_id, now)
        user = self.session.get(User, device.user_id)
        assert user is not None  # foreign key
        _deactivate(
            self.session, [Device.id == device.id], DeactivationReason.REMOVED_BY_DEVICE, now
        )
        self.audit.record(
            now=now,
            action="device.deactivated",
            actor=MOBILE_APP_ACTOR,
            mykad=user.mykad,
            target_id=device.id,
            outcome=DeactivationReason.REMOVED_BY_DEVICE,
        )
        after_commit(self.session, lambda: _notify_devices([device.id]))

    def deactivate_by_administrator(self, caller: Caller, device_id: str, now: datetime) -> Device:
        """JDN deactivates a device (active or still pending); one already deactivated is
        answered as it is."""
        device = self.session.get(Device, device_id)
        if device is None:
            raise NotFound("no such device")
        user = self.session.get(User, device.user_id)
        assert user is not None  # foreign key
        if _deactivate(
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
            after_commit(self.session, lambda: _notify_devices([device.id]))
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


def deactivate_for_phone_change(
    session: Session, audit: AuditLog, user_id: str, now: datetime, actor: str
) -> list[str]:
    """The lifecycle's hook: a new phone number deactivates the person's devices (the active
    one and any still waiting for activation), registered against the old number (FAQ 14,
    17). Returns the ids deactivated; call it in the transaction that changes the number."""
    deactivated = _deactivate(
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
        after_commit(session, lambda: _notify_devices(deactivated))
    return deactivated


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


def _deactivate(
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


def _notify_devices(device_ids: list[str]) -> None:
    # A waiting long-poll of a deactivated device ends now rather than at its deadline.
    for device_id in device_ids:
        MESSAGE_SIGNALS.notify(device_id)


# -- e-mails ----------------------------------------------------------------------------------
# Bilingual (Malay, then English), the code (if any) on its own first line, subjects naming
# their purpose. Nothing the unauthenticated caller typed (the model) goes into them.


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, repr=False)
class ActivationCodeNotice:
    code: str
    name: str
    platform: str
    os_version: str
    expires_at: datetime
    device_id: str

    def __repr__(self) -> str:
        return f"ActivationCodeNotice(device_id={self.device_id!r})"

    def subject(self) -> str:
        return "Kod pengaktifan MyGPKI Mobile / MyGPKI Mobile activation code"

    def body(self) -> str:
        expiry = _when(self.expires_at)
        return (
            f"Kod / Code: {self.code}\n"
            "\n"
            f"Kepada {self.name},\n"
            f"Peranti {self.platform} {self.os_version} telah didaftarkan untuk MyGPKI Mobile\n"
            "dengan MyKad dan nombor telefon anda. Masukkan kod di atas dalam aplikasi untuk\n"
            "mengaktifkannya. Peranti aktif anda yang lain (jika ada) akan dinyahaktifkan.\n"
            f"Kod sah sehingga: {expiry}. Kod ini untuk sekali guna sahaja; jangan kongsi.\n"
            "Jika anda tidak mendaftarkan peranti ini, abaikan e-mel ini dan maklumkan\n"
            "pentadbir anda.\n"
            "\n"
            f"Dear {self.name},\n"
            f"A {self.platform} {self.os_version} device was registered for MyGPKI Mobile with\n"
            "your MyKad and phone number. Enter the code above in the app to activate it.\n"
            "Your other active device (if any) will be deactivated.\n"
            f"The code is valid until {expiry}, for one use only; never share it.\n"
            "If you did not register this device, ignore this e-mail and tell your\n"
            "administrator.\n"
            "\n"
            f"Rujukan / Reference: {self.device_id}\n"
        )


@dataclass(frozen=True)
class DeviceActivatedNotice:
    name: str
    platform: str
    os_version: str
    activated_at: datetime
    replaced_platforms: tuple[str, ...]
    device_id: str

    def subject(self) -> str:
        return "Peranti MyGPKI Mobile diaktifkan / MyGPKI Mobile device activated"

    def body(self) -> str:
        when = _when(self.activated_at)
        replaced_ms = replaced_en = ""
        if self.replaced_platforms:
            previous = ", ".join(self.replaced_platforms)
            replaced_ms = (
                f"Peranti anda sebelum ini ({previous}) telah dinyahaktifkan dan tidak lagi\n"
                "menerima OTP.\n"
            )
            replaced_en = (
                f"Your previous device ({previous}) was deactivated and no longer receives\nOTPs.\n"
            )
        return (
            f"Kepada {self.name},\n"
            f"MyGPKI Mobile telah diaktifkan pada peranti {self.platform} {self.os_version}\n"
            f"pada {when}. OTP tandatangan anda kini dihantar ke peranti ini.\n"
            f"{replaced_ms}"
            "Jika anda tidak melakukan ini, hubungi pentadbir anda dengan segera.\n"
            "\n"
            f"Dear {self.name},\n"
            f"MyGPKI Mobile was activated on a {self.platform} {self.os_version} device at\n"
            f"{when}. Your signing OTPs now go to this device.\n"
            f"{replaced_en}"
            "If you did not do this, contact your administrator at once.\n"
            "\n"
            f"Rujukan / Reference: {self.device_id}\n"
        )
