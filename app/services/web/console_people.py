"""A person as the console shows them: media, credentials, devices, applications, status;
and the credential steps (unlock, revoke, renew) checked against that person. Who may see
whom is the API's rule (`PeopleService.check_visible`): another agency's person is answered
exactly as an unknown one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import Credential, Device, RoamingApplication, Role, User
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.devices.service import DeviceService
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.services.lifecycle.credentials import effective_status
from app.services.lifecycle.people import NO_SUCH_PERSON, PeopleService


@dataclass(frozen=True)
class CredentialRow:
    id: str
    medium: str
    status: str  # as it stands now: a current one past its date reads `expired`
    serial: str | None
    key_algorithm: str | None
    not_before: datetime | None
    not_after: datetime | None
    pin_failures: int
    revocation_reason: str | None


@dataclass(frozen=True)
class PersonView:
    user: User
    credentials: list[CredentialRow]
    devices: list[Device] | None  # None: not the caller's to see (JDN only, as the API)
    applications: list[RoamingApplication]
    signing_held: bool


class ConsolePeople:
    def __init__(
        self,
        session: Session,
        audit: AuditLog,
        credentials: CredentialLifecycle,
        devices: DeviceService,
    ) -> None:
        self.session = session
        self.audit = audit
        self.credentials = credentials
        self.devices = devices

    def find(self, caller: Caller, mykad: str) -> User:
        """The person of this MyKad if the caller may see them, else NotFound (the same)."""
        return PeopleService(self.session, self.audit).get_for(caller, mykad)

    def person(self, caller: Caller, user_id: str) -> User:
        user = self.session.get(User, user_id)
        if user is None:
            raise NotFound(NO_SUCH_PERSON)
        PeopleService.check_visible(caller, user)
        return user

    def view(self, caller: Caller, user_id: str, now: datetime) -> PersonView:
        """Everything the console shows of a person; the look is audited."""
        user = self.person(caller, user_id)
        credentials = [
            CredentialRow(
                credential.id,
                credential.medium,
                effective_status(credential, now),
                credential.certificate_serial or credential.token_serial,
                credential.key_algorithm,
                credential.not_before,
                credential.not_after,
                credential.pin_failures,
                credential.revocation_reason,
            )
            for credential in self.session.scalars(
                select(Credential)
                .where(Credential.user_id == user.id)
                .order_by(Credential.created_at.desc(), Credential.id)
            )
        ]
        devices = self.devices.of_person(user.mykad) if caller.role is Role.JDN_ADMIN else None
        applications = list(
            self.session.scalars(
                select(RoamingApplication)
                .where(RoamingApplication.user_id == user.id)
                .order_by(RoamingApplication.created_at.desc())
                .limit(5)
            )
        )
        held = user.signing_held_until is not None and user.signing_held_until > now
        self.audit.record(
            now=now, action="console.person_viewed", actor=caller.name, mykad=user.mykad
        )
        return PersonView(user, credentials, devices, applications, held)

    # -- the credential steps (JDN: the router checks the role, as the API's routes do) ---------

    def unlock(self, caller: Caller, user_id: str, credential_id: str, now: datetime) -> Credential:
        self._credential_of(caller, user_id, credential_id)
        return self.credentials.unlock(caller, credential_id, now)

    def revoke(
        self, caller: Caller, user_id: str, credential_id: str, reason: str, now: datetime
    ) -> Credential:
        self._credential_of(caller, user_id, credential_id)
        return self.credentials.revoke(caller, credential_id, reason, now)

    def renew(
        self,
        caller: Caller,
        user_id: str,
        credential_id: str,
        key_algorithm: str | None,
        now: datetime,
    ) -> Credential:
        self._credential_of(caller, user_id, credential_id)
        return self.credentials.renew(caller, credential_id, key_algorithm, now)

    def _credential_of(self, caller: Caller, user_id: str, credential_id: str) -> None:
        """404 unless the credential is this person's and the caller may see them."""
        user = self.person(caller, user_id)
        credential = self.session.get(Credential, credential_id)
        if credential is None or credential.user_id != user.id:
            raise NotFound("no such credential")
