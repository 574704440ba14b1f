"""What a signed-in person sees and does on /me/: their signatures, their pending requests
(declining one cancels it, as the requesting system's DELETE would)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import ApiClient, RequestStatus, Signature, SigningRequest, User
from app.services.audit.log import AuditLog
from app.services.web.signin import PAGES_SIGNER


@dataclass(frozen=True)
class RequestRow:
    id: str
    document_name: str
    system: str
    at: datetime
    fingerprint: str  # the document hash's first 16 hex digits
    status: str


class SelfService:
    def __init__(self, session: Session, audit: AuditLog) -> None:
        self.session = session
        self.audit = audit

    def recent_signatures(self, user: User, limit: int = 20) -> list[RequestRow]:
        rows = self.session.execute(
            select(SigningRequest, Signature.signed_at, ApiClient.name)
            .join(Signature, Signature.request_id == SigningRequest.id)
            .join(ApiClient, ApiClient.id == SigningRequest.signer_id)
            .where(SigningRequest.user_id == user.id)
            .order_by(Signature.signed_at.desc())
            .limit(limit)
        ).all()
        return [_row(request, system, signed_at) for request, signed_at, system in rows]

    def pending_requests(self, user: User, now: datetime) -> list[RequestRow]:
        rows = self.session.execute(
            select(SigningRequest, ApiClient.name)
            .join(ApiClient, ApiClient.id == SigningRequest.signer_id)
            .where(
                SigningRequest.user_id == user.id,
                SigningRequest.status == RequestStatus.PENDING,
                SigningRequest.expires_at > now,
                SigningRequest.authorized_at.is_(None),
                ApiClient.name != PAGES_SIGNER,
            )
            .order_by(SigningRequest.created_at.desc())
        ).all()
        return [_row(request, system, request.created_at) for request, system in rows]

    def decline(self, user: User, request_id: str, now: datetime) -> None:
        """Cancel one of the person's own pending requests; the system that asked sees it
        `cancelled`."""
        cancelled = self.session.execute(
            update(SigningRequest)
            .where(
                SigningRequest.id == request_id,
                SigningRequest.user_id == user.id,
                SigningRequest.status == RequestStatus.PENDING,
            )
            .values(status=RequestStatus.CANCELLED, finished_at=now)
            .returning(SigningRequest.id)
        ).first()
        if cancelled is None:
            raise NotFound("no such pending request")
        self.audit.record(
            now=now,
            action="signing_request.cancelled",
            actor="self-service",
            mykad=user.mykad,
            target_id=request_id,
            outcome="declined_by_person",
        )


def _row(request: SigningRequest, system: str, at: datetime) -> RequestRow:
    return RequestRow(
        id=request.id,
        document_name=request.document_name,
        system=system,
        at=at,
        fingerprint=request.document_hash[:16],
        status=request.status,
    )
