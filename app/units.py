"""The one place that builds the services of a unit of work, from the runtime and its session.

Routers (through app.deps), the CLI, the jobs and the tests ask a `Services` for what they
need; the services themselves only receive their collaborators and never see the runtime.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.orm import Session

from app.runtime import Runtime
from app.services.audit.log import AuditLog
from app.services.audit.trail import AuditTrailService
from app.services.ca import CertificateAuthorityService
from app.services.clients import ClientService
from app.services.devices.activation_code import EmailActivationCodeSender
from app.services.devices.service import DeviceService
from app.services.lifecycle.applications import ApplicationService
from app.services.lifecycle.contacts import ContactService
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.services.lifecycle.credentials import CredentialService
from app.services.lifecycle.people import PeopleService
from app.services.lifecycle.pins import PinService
from app.services.signing.csc import CscService
from app.services.signing.service import SigningService
from app.services.signing.verification import VerificationService
from app.services.trust.evidence import LongTermEvidence
from app.services.trust.material import TrustProvisioning
from app.services.trust.ocsp import OcspResponder
from app.services.trust.publication import PkiPublication
from app.services.trust.tsa import SignatureStamper, TimeStampAuthority
from app.services.web.console import ConsoleAdministrators, ConsoleSignIn
from app.services.web.console_applications import ConsoleApplications
from app.services.web.console_audit import ConsoleAuditTrail
from app.services.web.console_dashboard import ConsoleDashboard
from app.services.web.console_enrolments import ConsoleEnrolmentJobs
from app.services.web.console_people import ConsolePeople
from app.services.web.selfservice import SelfService
from app.services.web.sessions import WebSessionService
from app.services.web.signin import SignInService


class Services:
    """The services of one unit of work: its session and the process's collaborators around
    it. Each service is built on first use and shared within the unit (one audit log, one CA)."""

    def __init__(self, runtime: Runtime, session: Session) -> None:
        self.runtime = runtime
        self.session = session

    @cached_property
    def audit(self) -> AuditLog:
        return self.runtime.audit_log(self.session)

    @cached_property
    def ca(self) -> CertificateAuthorityService:
        # Always with the public base URL: certificates it issues carry their CRL and CA
        # issuers URLs (the other use cases ignore it).
        settings = self.runtime.settings
        return CertificateAuthorityService(
            self.session,
            self.runtime.key_store,
            self.runtime.ca_cache,
            settings.ca_name,
            settings.public_base_url,
        )

    @cached_property
    def provisioning(self) -> TrustProvisioning:
        """`ca init` and `ca upgrade`: the CA, the TSA and the OCSP responder."""
        runtime = self.runtime
        return TrustProvisioning(self.session, self.ca, runtime.key_store, runtime.trust_cache)

    @cached_property
    def publication(self) -> PkiPublication:
        return PkiPublication(self.ca)

    @cached_property
    def tsa(self) -> TimeStampAuthority:
        runtime = self.runtime
        return TimeStampAuthority(
            self.session,
            runtime.key_store,
            runtime.ca_cache,
            runtime.trust_cache,
            runtime.settings.tsa_policy_oid,
        )

    @cached_property
    def stamper(self) -> SignatureStamper:
        settings = self.runtime.settings
        client = self.runtime.tsa_client() if settings.tsa_url else None
        return SignatureStamper(self.tsa, settings.tsa_url, settings.tsa_timeout_seconds, client)

    @cached_property
    def evidence(self) -> LongTermEvidence:
        return LongTermEvidence(self.ocsp, self.publication)

    @cached_property
    def ocsp(self) -> OcspResponder:
        runtime = self.runtime
        return OcspResponder(
            self.session,
            runtime.key_store,
            runtime.ca_cache,
            runtime.trust_cache,
            runtime.ocsp_responses,
        )

    @cached_property
    def clients(self) -> ClientService:
        return ClientService(self.session, self.audit, self.runtime.api_keys)

    @cached_property
    def signing(self) -> SigningService:
        return SigningService(
            self.session,
            settings=self.runtime.settings,
            keys=self.runtime.keys,
            key_store=self.runtime.key_store,
            ca=self.ca,
            audit=self.audit,
            notices=self.runtime.notices,
            stamper=self.stamper,
            evidence=self.evidence,
        )

    @cached_property
    def csc(self) -> CscService:
        return CscService(
            self.session,
            signing=self.signing,
            ca=self.ca,
            keys=self.runtime.keys,
            settings=self.runtime.settings,
            audit=self.audit,
        )

    @cached_property
    def verification(self) -> VerificationService:
        return VerificationService(self.session, self.ca)

    @cached_property
    def devices(self) -> DeviceService:
        keys = self.runtime.keys
        return DeviceService(
            self.session,
            settings=self.runtime.settings,
            keys=keys,
            audit=self.audit,
            notices=self.runtime.notices,
            code_sender=EmailActivationCodeSender(self.session, self.runtime.notices),
        )

    @cached_property
    def people(self) -> PeopleService:
        return PeopleService(self.session, self.audit)

    @cached_property
    def credentials(self) -> CredentialService:
        """Issuing and revoking credentials by hand (the CLI)."""
        runtime = self.runtime
        return CredentialService(
            self.session, runtime.key_store, self.ca, self.audit, runtime.keys.pin_pepper
        )

    @cached_property
    def lifecycle(self) -> LifecycleContext:
        """What the lifecycle services share (built here only)."""
        return LifecycleContext(
            session=self.session,
            settings=self.runtime.settings,
            keys=self.runtime.keys,
            key_store=self.runtime.key_store,
            ca=self.ca,
            audit=self.audit,
            notices=self.runtime.notices,
        )

    @cached_property
    def applications(self) -> ApplicationService:
        return ApplicationService(self.lifecycle)

    @cached_property
    def credential_lifecycle(self) -> CredentialLifecycle:
        return CredentialLifecycle(self.lifecycle)

    @cached_property
    def pins(self) -> PinService:
        return PinService(self.lifecycle)

    @cached_property
    def contacts(self) -> ContactService:
        return ContactService(self.lifecycle)

    @cached_property
    def audit_trail(self) -> AuditTrailService:
        return AuditTrailService(self.session, self.runtime.keys.subject_ref)

    # -- the pages (app/routers/pages) ---------------------------------------------------------

    @cached_property
    def web_sessions(self) -> WebSessionService:
        return WebSessionService(self.session, self.runtime.settings)

    @cached_property
    def sign_in(self) -> SignInService:
        return SignInService(self.session, self.signing, self.web_sessions, self.audit)

    @cached_property
    def self_service(self) -> SelfService:
        return SelfService(self.session, self.audit, self.devices, self.contacts)

    @cached_property
    def console_admins(self) -> ConsoleAdministrators:
        return ConsoleAdministrators(self.session, self.audit, self.web_sessions)

    @cached_property
    def console_sign_in(self) -> ConsoleSignIn:
        return ConsoleSignIn(self.session, self.sign_in, self.signing, self.audit)

    @cached_property
    def console_audit(self) -> ConsoleAuditTrail:
        keys = self.runtime.keys
        return ConsoleAuditTrail(self.session, self.audit, keys.subject_ref, keys.audit_mac)

    @cached_property
    def console_dashboard(self) -> ConsoleDashboard:
        return ConsoleDashboard(self.session)

    @cached_property
    def console_applications(self) -> ConsoleApplications:
        return ConsoleApplications(self.session)

    @cached_property
    def console_enrolments(self) -> ConsoleEnrolmentJobs:
        return ConsoleEnrolmentJobs(self.session, self.applications, self.audit)

    @cached_property
    def console_people(self) -> ConsolePeople:
        return ConsolePeople(self.session, self.audit, self.credential_lifecycle, self.devices)
