"""Issuing: an OTP bound to one document hash, counted per person and per signer, sent to the
person's device or e-mail address."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.secrets import generate_otp, otp_mac
from app.db import Write, after_commit, select_after_writes
from app.errors import CredentialNotActive, NoActiveDevice, NoEmailAddress, OtpPending, RateLimited
from app.metrics import OTPS_ISSUED
from app.models import Credential, RequestStatus, SigningRequest, User
from app.models.base import new_id
from app.models.device import Device
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.credential_rules import binding_of, refuse_unless_can_sign
from app.services.devices.messages import DeviceMessageStore, OtpMessage, mobile_destination
from app.services.mail.notices import NoticeContext
from app.services.mail.outbox import Outbox
from app.services.mail.texts.common import mask_email
from app.services.mail.texts.signing import OtpNotice
from app.services.rate_limits import Hit, RateLimit, RateLimiter
from app.services.signing.statements import (
    EXPIRE_STALE_OF_MYKAD,
    INSERT_REQUEST,
    REQUEST_COLUMNS,
    person_with_signer,
)
from app.settings import Settings

logger = logging.getLogger("roamsign.signing")

OTPS_PER_PERSON = "otp_issuance:person"
OTPS_PER_SIGNER = "otp_issuance:signer"
OTPS_PER_SIGNER_PERSON = "otp_issuance:signer_person"
# Commit-long row locks of a few milliseconds on 16 rows instead of one: a signer's requests
# rarely queue on each other (see app.services.rate_limits).
SIGNER_COUNTER_SHARDS = 16


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


class OtpIssuer:
    """Issues one OTP for one document hash, for the person's usable roaming credential."""

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
        self.audit = audit
        self.notices = notices

    def request_signature(
        self, caller: Caller, new: NewSigningRequest, now: datetime
    ) -> SigningRequest:
        # Frees the document's hash from the person's stale requests in the same statement
        # (PostgreSQL): a refusal rolls it back, but for the counts' (it is kept then, as
        # harmless as it is: those requests' windows are over).
        expire_stale = Write(
            EXPIRE_STALE_OF_MYKAD, {"mykad": new.mykad, "hash": new.document_hash, "now": now}
        )
        # The person's rate limits are locked by the same statement (PostgreSQL), before
        # anything is counted: their counts are exact (app.services.rate_limits).
        limiter = RateLimiter(self.session, self.keys.subject_ref)
        hits, taken = self._issuance_limits(caller, new.mykad)
        locks = limiter.locks(hits, taken)
        row = select_after_writes(
            self.session,
            person_with_signer(len(locks)),
            {"mykad": new.mykad, **locks},
            [expire_stale],
        ).first()
        found_row: tuple[Any, ...] = tuple(row) if row is not None else (None, None, None)
        user: User | None = found_row[0]
        found: Credential | None = found_row[1]
        active: Device | None = found_row[2]
        credential = _usable_credential(self.session, found, now)
        assert user is not None  # _usable_credential refuses a missing person
        if new.credential_id is not None and new.credential_id != credential.id:
            raise CredentialNotActive("this credential is not the person's active roaming one")
        device = _mobile_device(active, new.channel)
        channel = "mobile" if device is not None else "email"
        if device is None and not user.email:
            raise NoEmailAddress("this person has no registered e-mail address for the OTP")
        # Counted once nothing else refuses, and before anything is written: the refusal
        # commits only the counts (the row locks they take last until the commit, so late).
        try:
            person_count = limiter.hit_then_take(now, hits, taken, locked=locks)
        except RateLimited:
            logger.warning("otp.rate_limited", extra={"client": caller.name})
            raise
        assert person_count is not None  # a taken limit's count

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
        request.otp_mac = otp_mac(self.keys.otp_mac, otp, binding_of(request))
        # Every column is set above, and the object is never added: nothing in this unit of
        # work changes the row again, so a Core insert skips the ORM's unit of work. It is
        # written with the OTP's message and the audit event, in one statement where the
        # database allows. No savepoint: losing the race for this hash refuses the whole unit.
        writes = [
            person_count,
            Write(
                INSERT_REQUEST,
                {column: getattr(request, column) for column in REQUEST_COLUMNS},
                OtpPending("an OTP for this document is already pending for this person"),
            ),
        ]

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
            message = DeviceMessageStore(self.session, self.keys.outbox_seal).prepare(
                device, otp_message(notice, now), now
            )
        else:
            assert user.email is not None
            message = Outbox(self.session, self.notices.seal_key).prepare(
                purpose="otp",
                recipient=user.email,
                subject=notice.subject(),
                body=notice.body(self.notices.zone),
                now=now,
                request_id=request.id,
                not_after=request.expires_at,
                headers={"X-Roamsign-Request-Id": request.id},
            )
        writes.append(message)
        after_commit(self.session, OTPS_ISSUED.labels(channel).inc)
        self.audit.record(
            together=writes,
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

    def _issuance_limits(self, caller: Caller, mykad: str) -> tuple[list[Hit], Hit]:
        """One OTP more for this signer, for this signer and person, and then, only if those
        let it through, for the person (`rate_limited` once over any).

        The signer's own limits are counted before they are checked, refusals too: a signer
        that keeps asking keeps its own limits closed. The person's limit is taken, not hit:
        checked under the person's lock and counted only when there is room, so refusals,
        whoever's, never count against the person, and one signer can use at most its own
        per-person share of the person's OTPs. The person is the MyKad asked for (known before
        the person is read, so that its read takes the locks).
        """
        settings = self.settings
        hits = [
            Hit(
                RateLimit(OTPS_PER_SIGNER_PERSON, settings.otps_per_signer_person_per_minute, 60),
                f"{caller.id}:{mykad}",
                f"at most {settings.otps_per_signer_person_per_minute} OTPs a minute for "
                "one person from this client; try again later",
            ),
            Hit(
                # The hot counter (one backend makes nearly every request): sharded.
                RateLimit(
                    OTPS_PER_SIGNER,
                    settings.otps_per_signer_per_minute,
                    60,
                    shards=SIGNER_COUNTER_SHARDS,
                ),
                caller.id,
                f"at most {settings.otps_per_signer_per_minute} OTPs a minute for "
                "this client; try again later",
            ),
        ]
        taken = Hit(
            RateLimit(OTPS_PER_PERSON, settings.otps_per_person_per_minute, 60),
            mykad,
            f"at most {settings.otps_per_person_per_minute} OTPs a minute for "
            "one person; try again later",
        )
        return hits, taken


def _usable_credential(
    session: Session, credential: Credential | None, now: datetime
) -> Credential:
    if credential is None:
        # An unknown person and one without an active roaming credential look the same.
        raise CredentialNotActive("no active roaming credential for this MyKad")
    refuse_unless_can_sign(session, credential, now)
    return credential


def _mobile_device(device: Device | None, requested_channel: str) -> Device | None:
    """The device the OTP goes to: `mobile` needs the person's active device, `auto` takes it
    when there is one (else e-mail), `email` never does."""
    if requested_channel == "email":
        return None
    if device is None and requested_channel == "mobile":
        raise NoActiveDevice("this person has no active MyGPKI Mobile device")
    return device


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
