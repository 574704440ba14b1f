"""The credential and attempt rules shared by native signing, CSC, PINs and jobs.

Expiry is read from `Credential.not_after`, the certificate's notAfter copied into the row when
the credential was issued: SQL can filter on it (jobs, the signing queries) and no check has to
parse a certificate for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.crypto.keystore import KeyStore, PublicKey
from app.crypto.secrets import OtpBinding
from app.db import after_commit, keep_changes, status_constant
from app.errors import (
    CredentialLocked,
    CredentialNotActive,
    OtpConsumed,
    OtpExpired,
    RateLimited,
    RequestLocked,
)
from app.models import Credential, CredentialStatus, Medium, RequestStatus, SigningRequest, User
from app.services.audit.log import AuditLog
from app.services.mail.notices import NoticeContext, queue_credential_locked_notice
from app.settings import Settings

# -- the credential ----------------------------------------------------------------------------

# A roaming credential that signs, or would but for a PIN lock: the one a person signs with
# (a partial unique index keeps it to one), reported as locked rather than missing.
SIGNING_CREDENTIAL: ColumnElement[bool] = and_(
    Credential.medium == Medium.ROAMING,
    # Constants in the SQL text: a list of values would be rendered into it at every execution.
    Credential.status.in_(
        [status_constant(CredentialStatus.ACTIVE), status_constant(CredentialStatus.LOCKED)]
    ),
)


def is_expired(credential: Credential, now: datetime) -> bool:
    return credential.not_after is not None and credential.not_after <= now


def can_sign(credential: Credential, now: datetime) -> bool:
    return credential.status == CredentialStatus.ACTIVE and not is_expired(credential, now)


def refuse_unless_can_sign(session: Session, credential: Credential, now: datetime) -> None:
    """Refuse a credential that cannot sign now; a lock is said first, as a PIN reset lifts it."""
    if credential.status == CredentialStatus.LOCKED:
        keep_changes(session)
        raise CredentialLocked("the credential is locked after repeated wrong PINs")
    if credential.status != CredentialStatus.ACTIVE:
        raise CredentialNotActive("the roaming credential is not active")
    if is_expired(credential, now):
        # No OTP for a certificate that could not sign it: the person would be e-mailed a
        # code that can only fail.
        raise CredentialNotActive("the roaming certificate has expired; it must be renewed")


def certificate_of(credential: Credential) -> x509.Certificate:
    assert credential.certificate_pem is not None  # roaming credentials carry theirs
    return x509.load_pem_x509_certificate(credential.certificate_pem.encode())


def public_key_of(certificate: x509.Certificate) -> PublicKey:
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("roaming certificates carry ECDSA or RSA keys")
    return public_key


# -- wrong PINs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinFailure:
    failures: int  # in a row, this one included
    locked: bool  # this failure locked the credential (this transaction made the change)


def count_pin_failure(
    session: Session,
    credential: Credential,
    max_failures: int,
    now: datetime,
    *,
    counts: bool = True,
) -> PinFailure:
    """One wrong PIN more, in a signature or a PIN change alike; `max_failures` in a row lock
    the credential. Tell the person with `report_credential_locked` when `locked`.

    `counts=False` (a signature whose OTP was wrong too: only someone who has the OTP may
    lock a person out) does the same statement with nothing added, so the work, and the time
    it takes, does not depend on which factor was wrong."""
    failures = session.execute(
        update(Credential)
        .where(Credential.id == credential.id)
        .values(pin_failures=Credential.pin_failures + (1 if counts else 0))
        .returning(Credential.pin_failures)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    locked = False
    if counts and failures >= max_failures:
        locked = (
            session.execute(
                update(Credential)
                .where(Credential.id == credential.id, Credential.status == CredentialStatus.ACTIVE)
                .values(status=CredentialStatus.LOCKED, locked_at=now, updated_at=now)
                .returning(Credential.id)
                .execution_options(synchronize_session=False)
            ).first()
            is not None
        )
    return PinFailure(failures, locked)


def report_credential_locked(
    session: Session,
    notices: NoticeContext,
    audit: AuditLog,
    actor: str,
    user: User,
    credential: Credential,
    now: datetime,
    *,
    key_store: KeyStore,
) -> None:
    """The person learns how to get a credential back that wrong PINs just locked; this
    process drops its unwrapped copy of the key once the lock is committed (the others check
    the credential's status before they sign)."""
    queue_credential_locked_notice(session, notices, user, credential, now)
    after_commit(session, partial(key_store.forget, credential.id))
    audit.record(
        now=now,
        action="credential.locked",
        actor=actor,
        mykad=user.mykad,
        target_id=credential.id,
        outcome="pin_failures",
    )


def clear_pin_failures(session: Session, credential: Credential) -> None:
    """A right PIN ends the run of wrong ones."""
    if credential.pin_failures:
        session.execute(
            update(Credential)
            .where(Credential.id == credential.id)
            .values(pin_failures=0)
            .execution_options(synchronize_session=False)
        )
        set_committed_value(credential, "pin_failures", 0)


# -- a person's failed checks ------------------------------------------------------------------


def refuse_held(session: Session, user: User, now: datetime) -> None:
    """Refuse while the person's signing is held back after too many failed checks."""
    if user.signing_held_until is not None and user.signing_held_until > now:
        keep_changes(session)
        raise RateLimited(
            "too many failed checks for this person; signing is held back for a while",
            retry_after_seconds=seconds_until(user.signing_held_until, now),
        )


def count_failed_check(
    session: Session, user: User, settings: Settings, now: datetime, *, counts: bool = True
) -> tuple[int, datetime | None]:
    """One failed OTP + PIN check more for the person: past the threshold each failure holds
    their signing back twice as long (capped). Returns the count and the end of the hold, if
    any. Only a check whose OTP was right counts (`counts`); one that does not runs the same
    statement with nothing added, for the same reason as in `count_pin_failure`."""
    failed_checks = session.execute(
        update(User)
        .where(User.id == user.id)
        .values(consecutive_failed_checks=User.consecutive_failed_checks + (1 if counts else 0))
        .returning(User.consecutive_failed_checks)
    ).scalar_one()
    over = failed_checks - settings.person_failure_threshold
    if over < 0 or not counts:
        return failed_checks, None
    hold = min(
        settings.person_hold_base_seconds * 2 ** min(over, 20), settings.person_hold_max_seconds
    )
    held_until = now + timedelta(seconds=hold)
    session.execute(update(User).where(User.id == user.id).values(signing_held_until=held_until))
    return failed_checks, held_until


def clear_failed_checks(user: User) -> None:
    """A right check ends the person's run of failed ones and any hold."""
    if user.consecutive_failed_checks or user.signing_held_until:
        user.consecutive_failed_checks = 0
        user.signing_held_until = None


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds() + 0.999))


# -- a request's OTP and SAD -------------------------------------------------------------------


def binding_of(request: SigningRequest) -> OtpBinding:
    """What the request's OTP (and its SAD) is bound to."""
    return OtpBinding(
        request_id=request.id,
        credential_id=request.credential_id,
        hash_algorithm=request.hash_algorithm,
        document_hash=request.document_hash,
        signer_id=request.signer_id,
    )


def refuse_spent_otp(session: Session, request: SigningRequest, now: datetime) -> None:
    """Refuse a request whose OTP can no longer be checked: used, exchanged, locked, expired."""
    if request.status in (RequestStatus.SIGNED, RequestStatus.CANCELLED):
        raise OtpConsumed("this OTP was already used or the request was cancelled")
    if request.authorized_at is not None:
        raise OtpConsumed("this OTP was already exchanged for a SAD")
    if request.status == RequestStatus.LOCKED:
        keep_changes(session)
        raise RequestLocked("too many failed attempts; request a new OTP")
    if request.status == RequestStatus.EXPIRED or now >= request.expires_at:
        raise OtpExpired("the OTP has expired; request a new one")


def refuse_spent_sad(request: SigningRequest, now: datetime) -> None:
    """Refuse a request whose SAD can no longer sign: used, voided by a cancel, or expired."""
    if request.status == RequestStatus.SIGNED:
        raise OtpConsumed("the SAD was already used")
    if request.status == RequestStatus.CANCELLED:
        raise OtpConsumed("the signing request was cancelled; the SAD is void")
    if request.status != RequestStatus.PENDING or (
        request.sad_expires_at is None or request.sad_expires_at <= now
    ):
        raise OtpExpired("the SAD has expired; authorize again with a new OTP")
