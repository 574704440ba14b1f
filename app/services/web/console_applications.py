"""The console's list of roaming applications waiting for a step: the address verification,
JDN's approval, or the PIN setup after approval. An agency administrator sees their agency's
only; approving and resending are the API's own use cases (`ApplicationService`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.models import (
    ApplicationStatus,
    Credential,
    CredentialStatus,
    RoamingApplication,
    Role,
    User,
)
from app.services.clients import Caller

PAGE_SIZE = 100


class Waiting(StrEnum):
    """What an application waits for (the console's filter)."""

    VERIFICATION = "verification"  # the person's address
    APPROVAL = "approval"  # JDN
    PIN = "pin"  # the person sets the PIN of the issued credential


_STATUS_OF = {
    Waiting.VERIFICATION: ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
    Waiting.APPROVAL: ApplicationStatus.EMAIL_VERIFIED,
    Waiting.PIN: ApplicationStatus.APPROVED,
}
_WAITING_OF = {status: waiting for waiting, status in _STATUS_OF.items()}


@dataclass(frozen=True)
class ApplicationRow:
    id: str
    mykad: str
    name: str
    agency: str
    email: str | None
    waiting: Waiting
    origin: str
    opened_at: datetime


@dataclass(frozen=True)
class ApplicationPage:
    rows: list[ApplicationRow]
    more: bool  # more than PAGE_SIZE wait: the oldest are shown


class ConsoleApplications:
    def __init__(self, session: Session) -> None:
        self.session = session

    def waiting(self, caller: Caller, only: Waiting | None = None) -> ApplicationPage:
        """The applications waiting for a step, oldest first, scoped to the caller's agency."""
        pin_pending = and_(
            RoamingApplication.status == ApplicationStatus.APPROVED,
            Credential.status == CredentialStatus.PENDING_PIN,
        )
        open_ = RoamingApplication.status.in_(
            [ApplicationStatus.AWAITING_EMAIL_VERIFICATION, ApplicationStatus.EMAIL_VERIFIED]
        )
        query = (
            select(RoamingApplication, User)
            .join(User, User.id == RoamingApplication.user_id)
            .outerjoin(Credential, Credential.id == RoamingApplication.credential_id)
            .where(or_(open_, pin_pending))
            .order_by(RoamingApplication.created_at, RoamingApplication.id)
            .limit(PAGE_SIZE + 1)
        )
        if only is not None:
            query = query.where(RoamingApplication.status == _STATUS_OF[only])
        if caller.role is Role.AGENCY_ADMIN:
            query = query.where(User.agency == caller.agency)
        found = self.session.execute(query).all()
        rows = [
            ApplicationRow(
                application.id,
                user.mykad,
                user.name,
                user.agency,
                user.email,
                _WAITING_OF[ApplicationStatus(application.status)],
                application.origin,
                application.created_at,
            )
            for application, user in found[:PAGE_SIZE]
        ]
        return ApplicationPage(rows, len(found) > PAGE_SIZE)
