"""People: registration, and who may see whom."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.models import Role, User
from app.services.audit.log import AuditLog
from app.services.clients import Caller

NO_SUCH_PERSON = "no such person"


class PeopleService:
    def __init__(self, session: Session, audit: AuditLog) -> None:
        self.session = session
        self.audit = audit

    def create(
        self,
        *,
        mykad: str,
        name: str,
        agency: str,
        email: str | None,
        phone: str | None,
        now: datetime,
        actor: str,
    ) -> User:
        """Register a person (inputs already normalised by the schema or the CLI)."""
        if self.find(mykad) is not None:
            raise Conflict("a person with this MyKad is already registered")
        user = User(
            mykad=mykad,
            name=name,
            email=email,
            phone=phone,
            agency=agency,
            created_at=now,
            updated_at=now,
            consecutive_failed_checks=0,
        )
        self.session.add(user)
        self.session.flush()
        self.audit.record(
            now=now,
            action="user.created",
            actor=actor,
            mykad=mykad,
            target_id=user.id,
            details={"agency": agency},
        )
        return user

    def find(self, mykad: str) -> User | None:
        return self.session.scalar(select(User).where(User.mykad == mykad))

    def get_for(self, caller: Caller, mykad: str) -> User:
        """The person, if this caller may see them; otherwise 404, revealing nothing."""
        user = self.find(mykad)
        if user is None:
            raise NotFound(NO_SUCH_PERSON)
        self.check_visible(caller, user)
        return user

    @staticmethod
    def check_visible(caller: Caller, user: User) -> None:
        """An agency administrator sees the people of their agency only; for anyone else the
        answer is the same 404 as for nobody at all."""
        if caller.role is Role.AGENCY_ADMIN and user.agency != caller.agency:
            raise NotFound(NO_SUCH_PERSON)

    def get(self, mykad: str) -> User:
        user = self.find(mykad)
        if user is None:
            raise NotFound(NO_SUCH_PERSON)
        return user
