"""The signing flow: an OTP bound to one document hash, one signature per OTP."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.crypto.cms import build_detached_cms, signature_algorithm_name
from app.crypto.keys import DerivedKeys
from app.crypto.keystore import KeyStore, PublicKey, RsaPadding
from app.crypto.secrets import OtpBinding, generate_otp, macs_equal, otp_mac, pin_mac
from app.db import after_commit, keep_changes, status_constant
from app.errors import (
    AuthorizationFailed,
    CredentialLocked,
    CredentialNotActive,
    NoActiveDevice,
    NoEmailAddress,
    NotFound,
    OtpConsumed,
    OtpExpired,
    OtpPending,
    RateLimited,
    RequestLocked,
    ValidationFailed,
)
from app.metrics import OTPS_ISSUED, SIGNATURES
from app.models import (
    Credential,
    CredentialStatus,
    Medium,
    RequestStatus,
    Signature,
    SigningRequest,
    User,
)
from app.models.base import new_id
from app.models.device import Device, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller
from app.services.devices.messages import (
    DeviceMessageStore,
    OtpMessage,
    mobile_destination,
)
from app.services.mail.notices import queue_credential_locked_notice, queue_signing_notice
from app.services.mail.outbox import Outbox
from app.services.mail.texts import OtpNotice, mask_email
from app.services.rate_limits import Hit, RateLimit, RateLimiter
from app.settings import Settings

logger = logging.getLogger("roamsign.signing")

_OTP_FORMAT = re.compile(r"^[0-9]{6}$")
OTPS_PER_PERSON = "otp_issuance:person"
OTPS_PER_SIGNER = "otp_issuance:signer"
# Commit-long row locks of a few milliseconds on 16 rows instead of one: a signer's requests
# rarely queue on each other (see app.services.rate_limits).
SIGNER_COUNTER_SHARDS = 16
_PIN_FORMAT = re.compile(r"^[0-9]{6,8}$")

# The hot statements, built once (building a statement and its cache key costs more than
# running it); Core on the table, so no ORM synchronisation either.
_REQUESTS: Table = SigningRequest.__table__  # type: ignore[assignment]
# Counts one check before anything is compared, atomically: parallel guesses cannot exceed
# the limit, and the row lock it takes is held until the transaction ends.
_COUNT_ATTEMPT = (
    update(_REQUESTS)
    .where(
        _REQUESTS.c.id == bindparam("request_id"),
        _REQUESTS.c.status == RequestStatus.PENDING,
        _REQUESTS.c.authorized_at.is_(None),
        _REQUESTS.c.attempts < bindparam("max_attempts"),
        _REQUESTS.c.expires_at > bindparam("now"),
    )
    .values(attempts=_REQUESTS.c.attempts + 1)
    .returning(_REQUESTS.c.attempts)
)
# Frees a person's document hash from pending requests whose window is over.
_EXPIRE_STALE = (
    update(_REQUESTS)
    .where(
        _REQUESTS.c.user_id == bindparam("person"),
        _REQUESTS.c.document_hash == bindparam("hash"),
        _REQUESTS.c.status == status_constant(RequestStatus.PENDING),
        _REQUESTS.c.expires_at <= bindparam("now"),
        # A SAD outliving the OTP's window keeps its request (and its hash) until used.
        or_(_REQUESTS.c.sad_expires_at.is_(None), _REQUESTS.c.sad_expires_at <= bindparam("now")),
    )
    .values(status=RequestStatus.EXPIRED, finished_at=bindparam("now"))
)
# Spends a pending OTP once. No values clause: the SET columns are the parameters the caller
# passes besides `request_id` (signed, or a SAD), each set of them compiled once.
_SPEND_OTP = (
    update(_REQUESTS)
    .where(
        _REQUESTS.c.id == bindparam("request_id"),
        _REQUESTS.c.status == RequestStatus.PENDING,
        _REQUESTS.c.authorized_at.is_(None),
    )
    .returning(_REQUESTS.c.id)
)
# The person, their roaming credential and their active device (partial unique indexes: at
# most one of each).
_PERSON_WITH_SIGNER = (
    select(User, Credential, Device)
    .outerjoin(
        Credential,
        and_(
            Credential.user_id == User.id,
            Credential.medium == Medium.ROAMING,
            Credential.status.in_([CredentialStatus.ACTIVE, CredentialStatus.LOCKED]),
        ),
    )
    .outerjoin(Device, and_(Device.user_id == User.id, Device.status == DeviceStatus.ACTIVE))
    .where(User.mykad == bindparam("mykad"))
)
# A new request and a signature are not changed again in the unit of work that writes them:
# Core inserts skip the ORM's unit of work (its flush of one new object cost more than the
# INSERT itself).
_INSERT_REQUEST = insert(_REQUESTS)
_REQUEST_COLUMNS = tuple(column.key for column in _REQUESTS.columns)
_SIGNATURES: Table = Signature.__table__  # type: ignore[assignment]
_INSERT_SIGNATURE = insert(_SIGNATURES)
_REQUEST_WITH_SIGNER = (
    select(SigningRequest, Credential, User)
    .join(Credential, Credential.id == SigningRequest.credential_id)
    .join(User, User.id == SigningRequest.user_id)
    .where(SigningRequest.id == bindparam("request_id"))
)


@dataclass(frozen=True)
class NewSigningRequest:
    mykad: str
    document_hash: str  # lowercase hex, validated against hash_algorithm
    hash_algorithm: str
    document_name: str
    channel: str
    signature_format: str
    # The credential the caller named (the CSC API addresses a credential, not a person): the
    # request is refused unless it is the person's usable roaming credential.
    credential_id: str | None = None


@dataclass(frozen=True)
class RawMechanism:
    """How a `raw` signature is made: RSA PKCS#1 v1.5 or PSS (ignored for ECDSA keys).

    `pss_salt_length` None means the digest length, the native API's choice.
    """

    rsa_padding: RsaPadding = "pkcs1v15"
    pss_salt_length: int | None = None


@dataclass(frozen=True)
class SignatureResult:
    request: SigningRequest
    signature: Signature
    certificate_pem: str
    chain_pems: tuple[str, ...]


class SigningService:
    """Issues OTPs for one document hash and turns one right OTP + PIN into one signature."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: DerivedKeys,
        key_store: KeyStore,
        ca: CertificateAuthorityService,
        audit: AuditLog,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.key_store = key_store
        self.ca = ca
        self.audit = audit
        # The session's identity map holds objects weakly: what get_own(with_signer=True)
        # loaded stays referenced here for the request, so session.get() finds it.
        self._kept_loaded: list[object] = []

    # -- issuing ------------------------------------------------------------------------------

    def request_signature(
        self, caller: Caller, new: NewSigningRequest, now: datetime
    ) -> SigningRequest:
        row = self.session.execute(_PERSON_WITH_SIGNER, {"mykad": new.mykad}).first()
        user, found, active = (row[0], row[1], row[2]) if row is not None else (None, None, None)
        credential = self._usable_credential(found, now)
        assert user is not None  # _usable_credential refuses a missing person
        if new.credential_id is not None and new.credential_id != credential.id:
            raise CredentialNotActive("this credential is not the person's active roaming one")
        device = self._mobile_device(active, new.channel)
        channel = "mobile" if device is not None else "email"
        if device is None and not user.email:
            raise NoEmailAddress("this person has no registered e-mail address for the OTP")
        # Counted once nothing else refuses, and before anything is written: the refusal
        # commits only the counts (the row locks they take last until the commit, so late).
        self._count_issuance(caller, user, now)
        self._expire_stale_requests(user.id, new.document_hash, now)

        request = SigningRequest(
            signer_id=caller.id,
            user_id=user.id,
            credential_id=credential.id,
            document_hash=new.document_hash,
            hash_algorithm=new.hash_algorithm,
            document_name=new.document_name,
            channel=channel,
            destination=(
                mobile_destination(device) if device is not None else mask_email(user.email or "")
            ),
            signature_format=new.signature_format,
            status=RequestStatus.PENDING,
            attempts=0,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.otp_ttl_seconds),
        )
        request.id = new_id()
        otp = generate_otp()
        request.otp_mac = otp_mac(self.keys.otp_mac, otp, self._binding(request))
        try:
            # No savepoint: losing the race for this hash refuses the whole unit of work.
            # Every column is set above, and the object is never added: nothing in this unit
            # of work changes the row again, so a Core insert skips the ORM's unit of work.
            self.session.connection().execute(
                _INSERT_REQUEST, {column: getattr(request, column) for column in _REQUEST_COLUMNS}
            )
        except IntegrityError:
            raise OtpPending(
                "an OTP for this document is already pending for this person"
            ) from None

        notice = OtpNotice(
            otp=otp,
            document_name=new.document_name,
            requesting_system=caller.name,
            hash_algorithm=new.hash_algorithm,
            document_hash_hex=new.document_hash,
            expires_at=request.expires_at,
            request_id=request.id,
        )
        if device is not None:
            # Stored for the device until it fetches it (store-and-forward), sealed meanwhile.
            DeviceMessageStore(self.session, self.keys.outbox_seal).enqueue(
                device, otp_message(notice, now), now
            )
        else:
            assert user.email is not None
            Outbox(self.session, self.keys.outbox_seal).enqueue(
                purpose="otp",
                recipient=user.email,
                subject=notice.subject(),
                body=notice.body(),
                now=now,
                request_id=request.id,
                not_after=request.expires_at,
                headers={"X-Roamsign-Request-Id": request.id},
            )
        after_commit(self.session, OTPS_ISSUED.labels(channel).inc)
        self.audit.record(
            now=now,
            action="otp.issued",
            actor=caller.name,
            mykad=user.mykad,
            target_id=request.id,
            details={
                "channel": channel,
                "hash_algorithm": new.hash_algorithm,
                "signature_format": new.signature_format,
            },
        )
        return request

    def _count_issuance(self, caller: Caller, user: User, now: datetime) -> None:
        """One OTP more for this person and this signer (`rate_limited` once over either)."""
        try:
            RateLimiter(self.session, self.keys.subject_ref).hit(
                now,
                Hit(
                    RateLimit(OTPS_PER_PERSON, self.settings.otps_per_person_per_minute, 60),
                    user.id,
                    f"at most {self.settings.otps_per_person_per_minute} OTPs a minute for "
                    "one person; try again later",
                ),
                Hit(
                    # The hot counter (one backend makes nearly every request): sharded.
                    RateLimit(
                        OTPS_PER_SIGNER,
                        self.settings.otps_per_signer_per_minute,
                        60,
                        shards=SIGNER_COUNTER_SHARDS,
                    ),
                    caller.id,
                    f"at most {self.settings.otps_per_signer_per_minute} OTPs a minute for "
                    "this client; try again later",
                ),
            )
        except RateLimited:
            logger.warning("otp.rate_limited", extra={"client": caller.name})
            raise

    # -- signing ------------------------------------------------------------------------------

    def sign(
        self, caller: Caller, request_id: str, otp: str, pin: str, now: datetime
    ) -> SignatureResult:
        """Check OTP and PIN in the contract's order and sign the stored hash once."""
        return self.sign_own(
            caller, self.get_own(caller, request_id, with_signer=True), otp, pin, now
        )

    def sign_own(
        self, caller: Caller, request: SigningRequest, otp: str, pin: str, now: datetime
    ) -> SignatureResult:
        """`sign` for a request `get_own(with_signer=True)` has already returned."""
        credential, user = self.check_otp_and_pin(caller, request, otp, pin, now)
        self._spend_otp(request, status=RequestStatus.SIGNED, finished_at=now)
        return self._sign_once(caller, request, credential, user, now, RawMechanism())

    def check_otp_and_pin(
        self, caller: Caller, request: SigningRequest, otp: str, pin: str, now: datetime
    ) -> tuple[Credential, User]:
        """The one check of an OTP and a PIN, in the contract's order; the native signature and
        CSC credentials/authorize both use it.

        Refusals before the check count nothing; the check itself counts one attempt whatever
        was wrong and raises `AuthorizationFailed` (committed with its counters). On success
        the person's failure counters are cleared, and spending the OTP (a signature, or a
        SAD) is the caller's next step, in the same transaction: the row lock taken by the
        count keeps concurrent submissions out until then.
        """
        if not _OTP_FORMAT.match(otp):
            raise ValidationFailed("otp must be 6 digits", "/otp")
        if not _PIN_FORMAT.match(pin):
            raise ValidationFailed("pin must be 6 to 8 digits", "/pin")
        self._refuse_unusable(request, now)
        credential = self.session.get(Credential, request.credential_id)
        user = self.session.get(User, request.user_id)
        assert credential is not None and user is not None  # foreign keys
        self._refuse_inactive(credential, now)
        if user.signing_held_until is not None and user.signing_held_until > now:
            keep_changes(self.session)
            raise RateLimited(
                "too many failed checks for this person; signing is held back for a while",
                retry_after_seconds=_seconds_until(user.signing_held_until, now),
            )

        attempts = self._count_attempt(request, now)
        # Both factors are always computed and compared, so the time taken says nothing
        # about which one was wrong.
        otp_ok = macs_equal(
            request.otp_mac, otp_mac(self.keys.otp_mac, otp, self._binding(request))
        )
        pin_ok = macs_equal(credential.pin_mac, pin_mac(self.keys.pin_pepper, credential.id, pin))
        if otp_ok and pin_ok:
            if credential.pin_failures:
                credential.pin_failures = 0
            if user.consecutive_failed_checks or user.signing_held_until:
                user.consecutive_failed_checks = 0
                user.signing_held_until = None
            return credential, user
        self._record_failure(caller, request, credential, user, attempts, otp_ok, pin_ok, now)
        remaining = self.settings.otp_max_attempts - attempts
        keep_changes(self.session)
        raise AuthorizationFailed("the OTP or the PIN is not correct", attempts_remaining=remaining)

    # -- the CSC API: the OTP is exchanged for a SAD, the SAD for the signature ----------------

    def exchange_otp_for_sad(
        self, request: SigningRequest, sad_mac: bytes, sad_expires_at: datetime, now: datetime
    ) -> None:
        """Spend the OTP that `check_otp_and_pin` just accepted on a SAD (only its MAC is kept)."""
        self._spend_otp(request, authorized_at=now, sad_mac=sad_mac, sad_expires_at=sad_expires_at)

    def _spend_otp(self, request: SigningRequest, **values: object) -> None:
        """Spend the OTP `check_otp_and_pin` just accepted, once: on a signature (native API) or
        on a SAD (CSC). The conditional update settles concurrent submissions."""
        spent = (
            self.session.connection()
            .execute(_SPEND_OTP, {"request_id": request.id, **values})
            .first()
        )
        if spent is None:
            raise OtpConsumed("this OTP was already used")
        _loaded_as(request, **values)

    def sign_with_sad(
        self, caller: Caller, request: SigningRequest, mechanism: RawMechanism, now: datetime
    ) -> SignatureResult:
        """Spend a SAD the caller has verified on the one signature of its request.

        The conditional update settles concurrent uses: one SAD, one signature.
        """
        credential = self.session.get(Credential, request.credential_id)
        user = self.session.get(User, request.user_id)
        assert credential is not None and user is not None  # foreign keys
        self._refuse_inactive(credential, now)
        consumed = self.session.execute(
            update(SigningRequest)
            .where(
                SigningRequest.id == request.id,
                SigningRequest.status == RequestStatus.PENDING,
                SigningRequest.authorized_at.is_not(None),
                SigningRequest.sad_expires_at > now,
            )
            .values(status=RequestStatus.SIGNED, finished_at=now)
            .returning(SigningRequest.id)
            .execution_options(synchronize_session=False)
        ).first()
        if consumed is None:
            self.session.refresh(request)
            if request.status == RequestStatus.PENDING:
                raise OtpExpired("the SAD has expired; authorize again with a new OTP")
            raise OtpConsumed("the SAD was already used")
        _loaded_as(request, status=RequestStatus.SIGNED, finished_at=now)
        return self._sign_once(caller, request, credential, user, now, mechanism)

    def get_own(
        self, caller: Caller, request_id: str, *, with_signer: bool = False
    ) -> SigningRequest:
        """The caller's request, else NotFound. `with_signer` loads its credential and person
        in the same query, for a check that needs them (later `session.get`s find them)."""
        if with_signer:
            row = self.session.execute(_REQUEST_WITH_SIGNER, {"request_id": request_id}).first()
            request = row[0] if row is not None else None
            if row is not None:
                self._kept_loaded.extend(row[1:])
        else:
            request = self.session.get(SigningRequest, request_id)
        if request is None or request.signer_id != caller.id:
            raise NotFound("no such signing request")
        return request

    def signature_of(self, request: SigningRequest) -> SignatureResult | None:
        if request.status != RequestStatus.SIGNED:
            return None
        signature = self.session.scalar(select(Signature).where(Signature.request_id == request.id))
        credential = self.session.get(Credential, request.credential_id)
        if signature is None or credential is None or credential.certificate_pem is None:
            return None
        return SignatureResult(
            request, signature, credential.certificate_pem, self.ca.material().chain_pems
        )

    def cancel(self, caller: Caller, request_id: str, now: datetime) -> SigningRequest:
        """The person declined: a pending request can no longer be used."""
        request = self.get_own(caller, request_id)
        cancelled = self.session.execute(
            update(SigningRequest)
            .where(SigningRequest.id == request.id, SigningRequest.status == RequestStatus.PENDING)
            .values(status=RequestStatus.CANCELLED, finished_at=now)
            .returning(SigningRequest.id)
        ).first()
        self.session.refresh(request)
        if cancelled is None:
            if request.status == RequestStatus.SIGNED:
                raise OtpConsumed("the request is already signed")
            return request
        user = self.session.get(User, request.user_id)
        self.audit.record(
            now=now,
            action="signing_request.cancelled",
            actor=caller.name,
            mykad=user.mykad if user else None,
            target_id=request.id,
        )
        return request

    def effective_status(self, request: SigningRequest, now: datetime) -> str:
        if request.status == RequestStatus.PENDING and now >= request.usable_until():
            return RequestStatus.EXPIRED
        return request.status

    def attempts_remaining(self, request: SigningRequest) -> int:
        return max(0, self.settings.otp_max_attempts - request.attempts)

    # -- the steps ----------------------------------------------------------------------------

    def _mobile_device(self, device: Device | None, requested_channel: str) -> Device | None:
        """The device the OTP goes to: `mobile` needs the person's active device, `auto` takes
        it when there is one (else e-mail), `email` never does."""
        if requested_channel == "email":
            return None
        if device is None and requested_channel == "mobile":
            raise NoActiveDevice("this person has no active MyGPKI Mobile device")
        return device

    def _usable_credential(self, credential: Credential | None, now: datetime) -> Credential:
        if credential is None:
            # An unknown person and one without an active roaming credential look the same.
            raise CredentialNotActive("no active roaming credential for this MyKad")
        if credential.status == CredentialStatus.LOCKED:
            keep_changes(self.session)
            raise CredentialLocked("the credential is locked after repeated wrong PINs")
        if credential.not_after is not None and credential.not_after <= now:
            # No OTP for a certificate that could not sign it: the person would be e-mailed
            # a code that can only fail.
            raise CredentialNotActive("the roaming certificate has expired; it must be renewed")
        return credential

    def _refuse_inactive(self, credential: Credential, now: datetime) -> None:
        if credential.status == CredentialStatus.LOCKED:
            keep_changes(self.session)
            raise CredentialLocked("the credential is locked after repeated wrong PINs")
        if credential.status != CredentialStatus.ACTIVE or (
            credential.not_after is not None and credential.not_after <= now
        ):
            raise CredentialNotActive("the roaming credential is not active")

    def _refuse_unusable(self, request: SigningRequest, now: datetime) -> None:
        if request.status in (RequestStatus.SIGNED, RequestStatus.CANCELLED):
            raise OtpConsumed("this OTP was already used or the request was cancelled")
        if request.authorized_at is not None:
            raise OtpConsumed("this OTP was already exchanged for a SAD")
        if request.status == RequestStatus.LOCKED:
            keep_changes(self.session)
            raise RequestLocked("too many failed attempts; request a new OTP")
        if request.status == RequestStatus.EXPIRED or now >= request.expires_at:
            raise OtpExpired("the OTP has expired; request a new one")

    def _count_attempt(self, request: SigningRequest, now: datetime) -> int:
        """Count one check before comparing anything, atomically: parallel guesses cannot
        exceed the limit. The row lock this takes is held until the transaction ends."""
        counted: int | None = (
            self.session.connection()
            .execute(
                _COUNT_ATTEMPT,
                {
                    "request_id": request.id,
                    "max_attempts": self.settings.otp_max_attempts,
                    "now": now,
                },
            )
            .scalar_one_or_none()
        )
        if counted is None:
            # Another submission changed the request between our read and this update.
            self.session.refresh(request)
            self._refuse_unusable(request, now)
            keep_changes(self.session)
            raise RequestLocked("too many failed attempts; request a new OTP")
        _loaded_as(request, attempts=counted)
        return counted

    def _sign_once(
        self,
        caller: Caller,
        request: SigningRequest,
        credential: Credential,
        user: User,
        now: datetime,
        mechanism: RawMechanism,
    ) -> SignatureResult:
        """Sign the request's hash and record the signature; the request was just marked
        signed by a conditional update, and the unique request_id is the last defence."""
        assert credential.key_blob is not None and credential.certificate_pem is not None
        material = self.ca.material()
        certificate = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
        public_key = certificate.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise TypeError("roaming certificates carry ECDSA or RSA keys")
        digest = bytes.fromhex(request.document_hash)
        if request.signature_format == "cms":
            signature_bytes = build_detached_cms(
                digest=digest,
                hash_algorithm=request.hash_algorithm,
                certificate=certificate,
                chain=[material.issuing, material.root],
                signing_time=now,
                sign=lambda data, algorithm: self.key_store.sign_digest(
                    credential.id, credential.key_blob or b"", data, algorithm
                ),
            )
            algorithm_name = signature_algorithm_name(public_key, request.hash_algorithm)
        else:
            signature_bytes = self._sign_raw(credential, digest, request.hash_algorithm, mechanism)
            algorithm_name = raw_algorithm_name(public_key, request.hash_algorithm, mechanism)
        values = {
            "id": new_id(),
            "request_id": request.id,
            "signature": signature_bytes,
            "signature_format": request.signature_format,
            "signature_algorithm": algorithm_name,
            "certificate_serial": credential.certificate_serial or "",
            "signed_at": now,
        }
        try:
            # No savepoint: a second signature refuses (and rolls back) the whole unit of work.
            self.session.connection().execute(_INSERT_SIGNATURE, values)
        except IntegrityError:
            raise OtpConsumed("this OTP was already used") from None
        signature = Signature(**values)  # what was written, for the answer; never added
        after_commit(self.session, SIGNATURES.labels(request.signature_format).inc)
        # The person learns of every signature made with their key, so misuse is seen.
        seal_key = self.keys.outbox_seal
        queue_signing_notice(self.session, seal_key, user, request, caller.name, now)
        self.audit.record(
            now=now,
            action="signature.created",
            actor=caller.name,
            mykad=user.mykad,
            target_id=request.id,
            details={
                "certificate_serial": signature.certificate_serial,
                "signature_format": signature.signature_format,
            },
        )
        return SignatureResult(request, signature, credential.certificate_pem, material.chain_pems)

    def _sign_raw(
        self, credential: Credential, digest: bytes, hash_algorithm: str, mechanism: RawMechanism
    ) -> bytes:
        assert credential.key_blob is not None
        return self.key_store.sign_digest(
            credential.id,
            credential.key_blob,
            digest,
            hash_algorithm,
            mechanism.rsa_padding,
            mechanism.pss_salt_length,
        )

    def _record_failure(
        self,
        caller: Caller,
        request: SigningRequest,
        credential: Credential,
        user: User,
        attempts: int,
        otp_ok: bool,
        pin_ok: bool,
        now: datetime,
    ) -> None:
        request_locked = attempts >= self.settings.otp_max_attempts
        if request_locked:
            self.session.execute(
                update(SigningRequest)
                .where(
                    SigningRequest.id == request.id, SigningRequest.status == RequestStatus.PENDING
                )
                .values(status=RequestStatus.LOCKED, finished_at=now)
            )
        credential_locked = False
        if pin_ok:
            if credential.pin_failures:
                self.session.execute(
                    update(Credential).where(Credential.id == credential.id).values(pin_failures=0)
                )
        else:
            failures = self.session.execute(
                update(Credential)
                .where(Credential.id == credential.id)
                .values(pin_failures=Credential.pin_failures + 1)
                .returning(Credential.pin_failures)
            ).scalar_one()
            if failures >= self.settings.pin_max_failures:
                credential_locked = (
                    self.session.execute(
                        update(Credential)
                        .where(
                            Credential.id == credential.id,
                            Credential.status == CredentialStatus.ACTIVE,
                        )
                        .values(status=CredentialStatus.LOCKED, locked_at=now, updated_at=now)
                        .returning(Credential.id)
                    ).first()
                    is not None
                )
        failed_checks = self.session.execute(
            update(User)
            .where(User.id == user.id)
            .values(consecutive_failed_checks=User.consecutive_failed_checks + 1)
            .returning(User.consecutive_failed_checks)
        ).scalar_one()
        held_until = None
        over = failed_checks - self.settings.person_failure_threshold
        if over >= 0:
            hold = min(
                self.settings.person_hold_base_seconds * 2 ** min(over, 20),
                self.settings.person_hold_max_seconds,
            )
            held_until = now + timedelta(seconds=hold)
            self.session.execute(
                update(User).where(User.id == user.id).values(signing_held_until=held_until)
            )
        reason = (
            "otp_and_pin_wrong"
            if not (otp_ok or pin_ok)
            else ("otp_wrong" if pin_ok else "pin_wrong")
        )
        self.audit.record(
            now=now,
            action="otp.check.rejected",
            actor=caller.name,
            mykad=user.mykad,
            target_id=request.id,
            outcome=reason,
            details={"attempt": attempts, "request_locked": request_locked},
        )
        if request_locked:
            self.audit.record(
                now=now,
                action="signing_request.locked",
                actor=caller.name,
                mykad=user.mykad,
                target_id=request.id,
            )
        if credential_locked:
            queue_credential_locked_notice(
                self.session, self.keys.outbox_seal, user, credential, now
            )
            self.audit.record(
                now=now,
                action="credential.locked",
                actor=caller.name,
                mykad=user.mykad,
                target_id=credential.id,
                outcome="pin_failures",
            )
        if held_until is not None:
            self.audit.record(
                now=now,
                action="person.signing_held",
                actor=caller.name,
                mykad=user.mykad,
                outcome="consecutive_failures",
                details={"failed_checks": failed_checks, "held_until": held_until.isoformat()},
            )

    def _expire_stale_requests(self, user_id: str, document_hash: str, now: datetime) -> None:
        # No ORM synchronisation needed: no request of this person is loaded in the session.
        self.session.connection().execute(
            _EXPIRE_STALE, {"person": user_id, "hash": document_hash, "now": now}
        )

    @staticmethod
    def _binding(request: SigningRequest) -> OtpBinding:
        return OtpBinding(
            request_id=request.id,
            credential_id=request.credential_id,
            hash_algorithm=request.hash_algorithm,
            document_hash=request.document_hash,
            signer_id=request.signer_id,
        )


def _loaded_as(request: SigningRequest, **values: object) -> None:
    """Show in the loaded object what a conditional UPDATE just stored, as if read from the
    row: cheaper than the ORM's own synchronisation, and it marks nothing for a second write."""
    for name, value in values.items():
        set_committed_value(request, name, value)


def raw_algorithm_name(public_key: PublicKey, hash_algorithm: str, mechanism: RawMechanism) -> str:
    """The name recorded for a raw signature (RSASSA-PSS is named with its hash)."""
    if isinstance(public_key, rsa.RSAPublicKey) and mechanism.rsa_padding == "pss":
        return f"RSASSA-PSS-{hash_algorithm.upper()}"
    return signature_algorithm_name(public_key, hash_algorithm)


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


def otp_message(notice: OtpNotice, issued_at: datetime) -> OtpMessage:
    """What the app shows: the e-mail's facts and code, for the device's own screen."""
    return OtpMessage(
        request_id=notice.request_id,
        otp=notice.otp,
        document_name=notice.document_name,
        requesting_system=notice.requesting_system,
        hash_algorithm=notice.hash_algorithm,
        document_fingerprint=notice.fingerprint,
        issued_at=issued_at,
        expires_at=notice.expires_at,
    )
