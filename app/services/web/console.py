"""The console's administrators: who holds a role (granted with the CLI), who is signed in,
and the sign-in that reveals nothing about who is an administrator.

An administrator acts through the API's own use cases with a `Caller` of their role and
agency (`ConsoleAdmin.caller`), so the console grants exactly the powers the API grants that
role, and every action is audited with the administrator's identity (`console:<user id>`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.errors import NotFound, ValidationFailed
from app.models import ConsoleAdministrator, ConsoleRole, Role, User, WebRealm, WebSession
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.lifecycle.people import NO_SUCH_PERSON
from app.services.web.sessions import WebSessionService
from app.services.web.signin import SignInService

CONSOLE_ACTOR_PREFIX = "console:"


def console_actor(user: User) -> str:
    """The audit trail's actor for an administrator: their person id (never the MyKad)."""
    return f"{CONSOLE_ACTOR_PREFIX}{user.id}"


@dataclass(frozen=True)
class ConsoleAdmin:
    """The signed-in administrator: the person, their role, and the agency they are bound to."""

    user: User
    role: ConsoleRole
    agency: str | None
    session_id: str

    @property
    def is_jdn(self) -> bool:
        return self.role is ConsoleRole.JDN_ADMIN

    @property
    def caller(self) -> Caller:
        """The API caller this administrator acts as: the same role, the same agency scope."""
        actor = console_actor(self.user)
        return Caller(id=actor, name=actor, role=Role(self.role.value), agency=self.agency)


@dataclass(frozen=True)
class Grant:
    mykad: str
    name: str
    role: str
    agency: str | None
    granted_at: datetime
    granted_by: str


@dataclass(frozen=True)
class ConsoleStart:
    """A console sign-in begun: the id its code page carries, where the code went. A decoy
    (someone who is not an administrator) looks the same but no code was sent."""

    request_id: str
    destination: str
    expires_at: datetime
    decoy: bool


class ConsoleAdministrators:
    """Grants and revokes console roles (the CLI), and resolves console sessions."""

    def __init__(self, session: Session, audit: AuditLog, web_sessions: WebSessionService):
        self.session = session
        self.audit = audit
        self.web_sessions = web_sessions

    # -- roles ---------------------------------------------------------------------------------

    def grant(
        self, mykad: str, role: str, agency: str | None, now: datetime, actor: str
    ) -> ConsoleAdministrator:
        """Grant (or change) a person's console role. An agency administrator is bound to the
        person's own agency; JDN is bound to none."""
        user = self._person(mykad)
        try:
            parsed = ConsoleRole(role)
        except ValueError:
            roles = ", ".join(ConsoleRole)
            raise ValidationFailed(f"role must be one of {roles}", "/role") from None
        if parsed is ConsoleRole.AGENCY_ADMIN:
            if not agency:
                raise ValidationFailed(
                    "an agency_admin is bound to one agency (--agency)", "/agency"
                )
            if agency != user.agency:
                raise ValidationFailed(
                    f"this person belongs to agency {user.agency!r}, not {agency!r}: an agency "
                    "administrator administers their own agency",
                    "/agency",
                )
        elif agency:
            raise ValidationFailed("a jdn_admin is bound to no agency", "/agency")
        row = self.session.get(ConsoleAdministrator, user.id)
        if row is None:
            row = ConsoleAdministrator(user_id=user.id)
            self.session.add(row)
        row.role = parsed.value
        row.agency = agency if parsed is ConsoleRole.AGENCY_ADMIN else None
        row.granted_at = now
        row.granted_by = actor
        self.session.flush()
        self.audit.record(
            now=now,
            action="console.role_granted",
            actor=actor,
            mykad=user.mykad,
            target_id=user.id,
            details={"role": parsed.value, "agency": row.agency},
        )
        return row

    def revoke(self, mykad: str, now: datetime, actor: str) -> None:
        """Take the role away; the person's console sessions end at once."""
        user = self._person(mykad)
        removed = self.session.execute(
            delete(ConsoleAdministrator)
            .where(ConsoleAdministrator.user_id == user.id)
            .returning(ConsoleAdministrator.user_id)
        ).first()
        if removed is None:
            raise NotFound("this person holds no console role")
        self.session.execute(
            update(WebSession)
            .where(
                WebSession.user_id == user.id,
                WebSession.realm == WebRealm.CONSOLE.value,
                WebSession.ended_at.is_(None),
            )
            .values(ended_at=now)
        )
        self.audit.record(
            now=now,
            action="console.role_revoked",
            actor=actor,
            mykad=user.mykad,
            target_id=user.id,
        )

    def grants(self) -> list[Grant]:
        rows = self.session.execute(
            select(ConsoleAdministrator, User)
            .join(User, User.id == ConsoleAdministrator.user_id)
            .order_by(ConsoleAdministrator.role, ConsoleAdministrator.agency, User.name)
        ).all()
        return [
            Grant(user.mykad, user.name, row.role, row.agency, row.granted_at, row.granted_by)
            for row, user in rows
        ]

    def _person(self, mykad: str) -> User:
        user = self.session.scalar(select(User).where(User.mykad == mykad))
        if user is None:
            raise NotFound(NO_SUCH_PERSON)
        return user

    # -- sessions ------------------------------------------------------------------------------

    def signed_in(self, token: str | None, now: datetime) -> ConsoleAdmin | None:
        """The administrator of a live console session who still holds a role, else None."""
        found = self.web_sessions.resolve(token, WebRealm.CONSOLE, now)
        if found is None:
            return None
        row = self.session.get(ConsoleAdministrator, found.user.id)
        if row is None:
            return None
        return ConsoleAdmin(found.user, ConsoleRole(row.role), row.agency, found.session_id)

    def sign_out(self, admin: ConsoleAdmin, token: str | None, now: datetime) -> None:
        self.web_sessions.end(token, now)
        self.audit.record(
            now=now,
            action="console.signed_out",
            actor=admin.caller.name,
            target_id=admin.session_id,
        )


class ConsoleSignIn:
    """The console's sign-in: the pages' sign-in (MyKad, then OTP + PIN by the rules of a
    signature) for administrators only.

    Someone who is not an administrator is answered as an administrator would be: refused
    exactly as /me/ refuses them (unknown, no usable credential, limits), and otherwise shown
    a code page, though no code was sent (the sign-in is rolled back) and every code is wrong.
    So the console reveals nothing /me/ does not about a MyKad."""

    def __init__(self, session: Session, sign_in: SignInService) -> None:
        self.session = session
        self.sign_in = sign_in

    def begin(self, mykad: str, now: datetime) -> ConsoleStart:
        user = self.session.scalar(select(User).where(User.mykad == mykad))
        administrator = (
            self.session.get(ConsoleAdministrator, user.id) if user is not None else None
        )
        if administrator is not None:
            started = self.sign_in.begin(mykad, now)
            return ConsoleStart(started.id, started.destination, started.expires_at, decoy=False)
        # Refused as /me/ would refuse (a counted refusal keeps its count); otherwise undone:
        # no request, no code sent.
        savepoint = self.session.begin_nested()
        started = self.sign_in.begin(mykad, now)
        decoy = ConsoleStart(str(uuid.uuid4()), started.destination, started.expires_at, True)
        savepoint.rollback()
        return decoy

    def finish(self, request_id: str, otp: str, pin: str, now: datetime) -> tuple[str, User]:
        """Check the OTP and PIN of an administrator's sign-in; returns the session's token.
        A sign-in whose person lost the role meanwhile is refused as an unusable request."""
        request = self.sign_in.pending(request_id, now)
        if self.session.get(ConsoleAdministrator, request.user_id) is None:
            raise NotFound("no such sign-in")
        return self.sign_in.finish(request_id, otp, pin, WebRealm.CONSOLE, now)
