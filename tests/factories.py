"""Factories: API clients, people and credentials made through the real services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.db import unit_of_work
from app.runtime import Runtime
from app.services.audit import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import ClientService
from app.services.credentials import CredentialService
from app.services.people import PeopleService

DEFAULT_PIN = "583920"


@dataclass
class Person:
    mykad: str
    name: str
    email: str | None
    user_id: str
    credential_id: str | None
    pin: str


class Factory:
    """Makes what tests need through the same services the API uses."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._mykad_counter = 0

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.runtime.sessions

    def now(self) -> datetime:
        return self.runtime.clock.now()

    def audit(self, session: Session) -> AuditLog:
        return self.runtime.audit_log(session)

    def ca(self, session: Session) -> CertificateAuthorityService:
        return CertificateAuthorityService(
            session, self.runtime.key_store, self.runtime.ca_cache, self.runtime.settings.ca_name
        )

    def init_ca(self) -> None:
        with unit_of_work(self.sessions) as session:
            self.ca(session).init(self.now())

    def client(self, name: str, role: str, agency: str | None = None) -> str:
        with unit_of_work(self.sessions) as session:
            _client, key = ClientService(session, self.audit(session)).create(
                name, role, agency, self.now()
            )
        return key

    def next_mykad(self) -> str:
        self._mykad_counter += 1
        return f"900101{14:02d}{self._mykad_counter:04d}"

    def person(
        self,
        *,
        mykad: str | None = None,
        name: str = "Nur Aisyah binti Ahmad",
        email: str | None = "aisyah@jdn.gov.my",
        phone: str | None = "+60123456789",
        agency: str = "JDN",
        pin: str = DEFAULT_PIN,
        key_algorithm: str = "ecdsa-p256",
        roaming: bool = True,
    ) -> Person:
        mykad = mykad or self.next_mykad()
        with unit_of_work(self.sessions) as session:
            audit = self.audit(session)
            user = PeopleService(session, audit).create(
                mykad=mykad,
                name=name,
                agency=agency,
                email=email,
                phone=phone,
                now=self.now(),
                actor="test",
            )
            credential_id = None
            if roaming:
                credential = CredentialService(
                    session,
                    self.runtime.key_store,
                    self.ca(session),
                    audit,
                    self.runtime.keys.pin_pepper,
                ).issue_roaming(
                    mykad,
                    pin,
                    key_algorithm,
                    self.now(),
                    self.runtime.settings.certificate_validity_days,
                    "test",
                )
                credential_id = credential.id
            return Person(mykad, name, email, user.id, credential_id, pin)
