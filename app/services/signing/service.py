"""The signing flow: an OTP bound to one document hash, one signature per OTP.

`SigningService` is what routers, CSC and the CLI call; it composes the steps, each in its own
module: issuing (issue.py), the OTP + PIN check (check.py), spending an OTP or a SAD
(spend.py) and making the signature (sign.py), over the prebuilt statements (statements.py)
and the shared credential rules (app.services.credential_rules).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.keystore import KeyStore
from app.errors import NotFound, OtpConsumed
from app.models import Credential, RequestStatus, Signature, SigningRequest, User
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller
from app.services.credential_rules import refuse_unless_can_sign
from app.services.mail.notices import NoticeContext
from app.services.signing.check import OtpPinCheck
from app.services.signing.issue import (
    OTPS_PER_PERSON,
    OTPS_PER_SIGNER,
    SIGNER_COUNTER_SHARDS,
    NewSigningRequest,
    OtpIssuer,
    otp_message,
)
from app.services.signing.sign import (
    RawMechanism,
    SignatureMaker,
    SignatureResult,
    raw_algorithm_name,
)
from app.services.signing.spend import spend_checked_otp, spend_otp, spend_sad
from app.services.signing.statements import REQUEST_WITH_LOCKED_SIGNER, SIGNER_LOCKED
from app.services.trust.evidence import LongTermEvidence
from app.services.trust.tsa import SignatureStamper
from app.settings import Settings

__all__ = [
    "OTPS_PER_PERSON",
    "OTPS_PER_SIGNER",
    "SIGNER_COUNTER_SHARDS",
    "NewSigningRequest",
    "RawMechanism",
    "SignatureResult",
    "SigningService",
    "otp_message",
    "raw_algorithm_name",
]


class SigningService:
    """Issues OTPs for one document hash and turns one right OTP + PIN into one signature."""

    def __init__(
        self,
        session: Session,
        *,
        settings: Settings,
        keys: Secrets,
        key_store: KeyStore,
        ca: CertificateAuthorityService,
        audit: AuditLog,
        notices: NoticeContext,
        stamper: SignatureStamper | None = None,
        evidence: LongTermEvidence | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.keys = keys
        self.key_store = key_store
        self.ca = ca
        self.audit = audit
        self._issuer = OtpIssuer(
            session, settings=settings, keys=keys, audit=audit, notices=notices
        )
        self._check = OtpPinCheck(
            session,
            settings=settings,
            keys=keys,
            audit=audit,
            key_store=key_store,
            notices=notices,
        )
        self._maker = SignatureMaker(
            session,
            keys=keys,
            key_store=key_store,
            ca=ca,
            audit=audit,
            notices=notices,
            stamper=stamper,
            evidence=evidence,
        )
        # The session's identity map holds objects weakly: what get_own(with_signer=True)
        # loaded stays referenced here for the request, so session.get() finds it.
        self._kept_loaded: list[object] = []

    def request_signature(
        self, caller: Caller, new: NewSigningRequest, now: datetime
    ) -> SigningRequest:
        return self._issuer.request_signature(caller, new, now)

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
        spend = spend_checked_otp(request, status=RequestStatus.SIGNED, finished_at=now)
        return self._maker.sign_once(caller, request, credential, user, now, RawMechanism(), spend)

    def check_otp_and_pin(
        self, caller: Caller, request: SigningRequest, otp: str, pin: str, now: datetime
    ) -> tuple[Credential, User]:
        """See `OtpPinCheck.check_otp_and_pin`: the one check, counted, in the contract's order."""
        return self._check.check_otp_and_pin(caller, request, otp, pin, now)

    # -- the CSC API: the OTP is exchanged for a SAD, the SAD for the signature ----------------

    def exchange_otp_for_sad(
        self, request: SigningRequest, sad_mac: bytes, sad_expires_at: datetime, now: datetime
    ) -> None:
        """Spend the OTP that `check_otp_and_pin` just accepted on a SAD (only its MAC is kept)."""
        spend_otp(
            self.session, request, authorized_at=now, sad_mac=sad_mac, sad_expires_at=sad_expires_at
        )

    def sign_with_sad(
        self, caller: Caller, request: SigningRequest, mechanism: RawMechanism, now: datetime
    ) -> SignatureResult:
        """Spend a SAD the caller has verified on the one signature of its request."""
        credential = self.session.get(Credential, request.credential_id)
        user = self.session.get(User, request.user_id)
        assert credential is not None and user is not None  # foreign keys
        refuse_unless_can_sign(self.session, credential, now)
        spend_sad(self.session, request, now)
        return self._maker.sign_once(caller, request, credential, user, now, mechanism)

    # -- the caller's requests ----------------------------------------------------------------

    def get_own(
        self, caller: Caller, request_id: str, *, with_signer: bool = False
    ) -> SigningRequest:
        """The caller's request, else NotFound. `with_signer` loads its credential and person
        in the same query, locked for the check that needs them (later `session.get`s find
        them)."""
        if with_signer:
            row = self.session.execute(
                REQUEST_WITH_LOCKED_SIGNER, {"request_id": request_id}
            ).first()
            request = row[0] if row is not None else None
            if row is not None:
                self._kept_loaded.extend(row[1:])
                self.session.info[SIGNER_LOCKED] = request_id
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
