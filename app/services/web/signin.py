"""Signing in to the pages with MyKad, an OTP and the PIN, by the rules of a signature.

A sign-in is a signing request of the pages' own signer (`roamsign-pages`, an API client
whose key nobody holds) over a random hash: the OTP goes out by the person's channel (their
device, else e-mail) under the same limits, and the one OTP + PIN check
(app.services.signing.check) counts the attempts and locks as for a signature. The accepted
OTP is spent on the sign-in (`authorized_at`), so it signs nothing."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import ApiClient, Role, SigningRequest, User
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.signing.issue import NewSigningRequest
from app.services.signing.service import SigningService
from app.services.signing.spend import spend_otp
from app.services.web.sessions import WebSessionService

PAGES_SIGNER = "roamsign-pages"
SIGN_IN_DOCUMENT = "Log masuk roamsign / Sign in to roamsign"


class SignInService:
    def __init__(
        self,
        session: Session,
        signing: SigningService,
        web_sessions: WebSessionService,
        audit: AuditLog,
    ) -> None:
        self.session = session
        self.signing = signing
        self.web_sessions = web_sessions
        self.audit = audit

    def pages_signer(self, now: datetime) -> Caller:
        """The pages' own signer, made on first use (its key is never known to anyone)."""
        found = self.session.scalar(select(ApiClient).where(ApiClient.name == PAGES_SIGNER))
        if found is None:
            unknowable = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
            try:
                with self.session.begin_nested():
                    found = ApiClient(
                        name=PAGES_SIGNER, role=Role.SIGNER, key_hash=unknowable, created_at=now
                    )
                    self.session.add(found)
            except IntegrityError:  # another sign-in made it first
                found = self.session.scalar(select(ApiClient).where(ApiClient.name == PAGES_SIGNER))
        assert found is not None
        return Caller(id=found.id, name=found.name, role=Role.SIGNER, agency=None)

    def begin(self, mykad: str, now: datetime) -> SigningRequest:
        """Send the person an OTP for signing in; refused as a signing request would be."""
        nonce = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
        return self.signing.request_signature(
            self.pages_signer(now),
            NewSigningRequest(
                mykad=mykad,
                document_hash=nonce,
                hash_algorithm="sha256",
                document_name=SIGN_IN_DOCUMENT,
                channel="auto",
                signature_format="cms",
            ),
            now,
        )

    def pending(self, request_id: str, now: datetime) -> SigningRequest:
        return self.signing.get_own(self.pages_signer(now), request_id)

    def finish(
        self, request_id: str, otp: str, pin: str, realm: str, now: datetime
    ) -> tuple[str, User]:
        """Check the OTP and PIN (counted, as for a signature), spend the OTP on a session;
        returns the session cookie's token and the person."""
        caller = self.pages_signer(now)
        request = self.signing.get_own(caller, request_id, with_signer=True)
        _credential, user = self.signing.check_otp_and_pin(caller, request, otp, pin, now)
        spend_otp(self.session, request, authorized_at=now)
        token = self.web_sessions.start(user, realm, now)
        self.audit.record(
            now=now,
            action="web.signed_in",
            actor=PAGES_SIGNER,
            mykad=user.mykad,
            target_id=request.id,
            details={"realm": realm},
        )
        return token, user
