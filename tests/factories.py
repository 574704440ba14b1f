"""Factories: API clients, people and credentials made through the real services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db import unit_of_work
from app.models import Medium, Role
from app.runtime import Runtime
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller, ClientService
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.services.lifecycle.credentials import CredentialService
from app.services.lifecycle.people import PeopleService
from app.units import Services
from tests.mobile_app import MobileApp

DEFAULT_PIN = "583920"
FACTORY_CALLER = Caller(id="test", name="test", role=Role.JDN_ADMIN, agency=None)


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
            session,
            self.runtime.key_store,
            self.runtime.ca_cache,
            self.runtime.settings.ca_name,
            self.runtime.settings.public_base_url,
        )

    def lifecycle(self, session: Session) -> LifecycleContext:
        return Services(self.runtime, session).lifecycle

    def record_medium(
        self,
        mykad: str,
        serial: str,
        not_after: datetime,
        medium: Medium = Medium.TOKEN,
    ) -> str:
        """A token (or softcert) on record for the person; returns the credential id."""
        with unit_of_work(self.sessions) as session:
            credential = CredentialLifecycle(self.lifecycle(session)).record_medium(
                FACTORY_CALLER,
                mykad,
                medium=medium,
                serial=serial,
                not_before=None,
                not_after=not_after,
                now=self.now(),
            )
            return credential.id

    def token_user(self, *, email: str | None = "aisyah@jdn.gov.my", agency: str = "JDN") -> Person:
        """A person who signs with a hardware token today: no roaming credential yet."""
        person = self.person(email=email, agency=agency, roaming=False)
        self.record_medium(
            person.mykad, f"TKN-{person.mykad[-6:]}", self.now() + timedelta(days=365)
        )
        return person

    def init_ca(self) -> None:
        """The CA, its TSA and OCSP responder, as `ca init` makes them."""
        with unit_of_work(self.sessions) as session:
            Services(self.runtime, session).provisioning.init(self.now())

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

    def mobile_device(
        self,
        person: Person,
        *,
        phone: str = "+60123456789",
        platform: str = "android",
        os_version: str = "14",
    ) -> MobileApp:
        """An active MyGPKI Mobile device of the person, registered and activated through the
        service, as the simulated app holding its key. The person's previous device, if any,
        is deactivated, as with any activation."""
        from app.models import User
        from app.models.device import Device
        from app.services.devices.registration import DeviceRegistration
        from app.services.devices.service import DeviceService

        codes: list[str] = []

        class CapturingSender:
            def send(self, *, user: User, device: Device, code: str, now: datetime) -> None:
                codes.append(code)

        def service(session: Session) -> DeviceService:
            return DeviceService(
                session,
                settings=self.runtime.settings,
                keys=self.runtime.keys,
                audit=self.audit(session),
                notices=self.runtime.notices,
                code_sender=CapturingSender(),
            )

        with unit_of_work(self.sessions) as session:
            registration = DeviceRegistration(
                mykad=person.mykad,
                phone=phone,
                platform=platform,  # type: ignore[arg-type]
                os_version=os_version,
                has_sim=True,
                model=None,
                client_address="factory",
            )
            device_id = service(session).register(registration, self.now()).id
        app = MobileApp(device_id)
        with unit_of_work(self.sessions) as session:
            service(session).activate(device_id, codes[-1], app.public_key_pem, self.now())
        return app
