"""SQLAlchemy models; importing this package registers every table on `Base.metadata`."""

from app.models.audit import AuditChainHead, AuditEvent
from app.models.ca import CertificateAuthority
from app.models.client import ApiClient, Role
from app.models.device import Device as Device  # registers the MyGPKI Mobile tables
from app.models.lifecycle import (
    ApplicationStatus,
    JobRun,
    OneTimeToken,
    RoamingApplication,
    TokenPurpose,
)
from app.models.outbox import OutboxMessage, OutboxStatus
from app.models.person import Credential, CredentialStatus, Medium, User
from app.models.rate_limit import RateWindow
from app.models.signing import RequestStatus, Signature, SigningRequest
from app.models.web import ConsoleAdministrator, ConsoleRole, WebRealm, WebSession

__all__ = [
    "ApiClient",
    "ApplicationStatus",
    "AuditChainHead",
    "AuditEvent",
    "CertificateAuthority",
    "ConsoleAdministrator",
    "ConsoleRole",
    "Credential",
    "CredentialStatus",
    "JobRun",
    "Medium",
    "OneTimeToken",
    "OutboxMessage",
    "OutboxStatus",
    "RateWindow",
    "RequestStatus",
    "RoamingApplication",
    "Role",
    "Signature",
    "SigningRequest",
    "TokenPurpose",
    "User",
    "WebRealm",
    "WebSession",
]
