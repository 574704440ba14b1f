"""What a signed-in person sees and does on /me/: their signatures, their pending requests
(declining one cancels it, as the requesting system's DELETE would), their credentials and
certificates, their device (deactivating it), their e-mail address (changed through its
verification).

Every lookup is scoped to the signed-in person: another person's credential or device is the
same `NotFound` as one that does not exist. The changes go through the API's own services
(devices, contacts), so they follow the API's rules and are audited with the person as actor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import (
    ApiClient,
    Credential,
    RequestStatus,
    Role,
    Signature,
    SigningRequest,
    User,
)
from app.models.device import Device, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.clients import Caller
from app.services.devices.service import DeviceService
from app.services.lifecycle.contacts import ContactChanges, ContactService
from app.services.lifecycle.credentials import effective_status
from app.services.web.signin import PAGES_SIGNER


@dataclass(frozen=True)
class RequestRow:
    id: str
    document_name: str
    system: str
    at: datetime
    fingerprint: str  # the document hash's first 16 hex digits
    status: str


@dataclass(frozen=True)
class CredentialRow:
    id: str
    medium: str
    status: str  # as the API shows it now (`expired` past its validity)
    serial: str | None
    key_algorithm: str | None
    not_before: datetime | None
    not_after: datetime | None
    fingerprint: str | None  # SHA-256 of the certificate's DER, colon-separated hex
    has_certificate: bool


@dataclass(frozen=True)
class CertificateFile:
    """A certificate to download: its DER (the `.cer`) and PEM, and a file name's stem."""

    der: bytes
    pem: str
    stem: str


def person_caller(user: User) -> Caller:
    """The signed-in person acting on their own record: the audit trail's actor names them
    (by their record's id: never the MyKad in clear)."""
    return Caller(id=user.id, name=f"person:{user.id}", role=Role.PORTAL, agency=None)


class SelfService:
    def __init__(
        self,
        session: Session,
        audit: AuditLog,
        devices: DeviceService,
        contacts: ContactService,
    ) -> None:
        self.session = session
        self.audit = audit
        self.devices = devices
        self.contacts = contacts

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

    # -- credentials and certificates -------------------------------------------------------

    def credentials(self, user: User, now: datetime) -> list[CredentialRow]:
        """The person's credentials, newest first, with their certificates' fingerprints."""
        found = self.session.scalars(
            select(Credential)
            .where(Credential.user_id == user.id)
            .order_by(Credential.created_at.desc(), Credential.id)
        )
        return [_credential_row(credential, now) for credential in found]

    def certificate(self, user: User, credential_id: str) -> CertificateFile:
        """One of the person's own certificates; anyone else's is not found."""
        credential = self.session.get(Credential, credential_id)
        if credential is None or credential.user_id != user.id or not credential.certificate_pem:
            raise NotFound("no such certificate")
        certificate = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
        serial = credential.certificate_serial or format(certificate.serial_number, "x")
        return CertificateFile(
            der=certificate.public_bytes(Encoding.DER),
            pem=certificate.public_bytes(Encoding.PEM).decode(),
            stem=f"roamsign-{serial}",
        )

    # -- the device ---------------------------------------------------------------------------

    def active_device(self, user: User) -> Device | None:
        return self.session.scalar(
            select(Device).where(Device.user_id == user.id, Device.status == DeviceStatus.ACTIVE)
        )

    def own_active_device(self, user: User, device_id: str) -> Device:
        """The person's active device of this id; another's, or one no longer active, is not
        found."""
        device = self.session.get(Device, device_id)
        if device is None or device.user_id != user.id or device.status != DeviceStatus.ACTIVE:
            raise NotFound("no such device")
        return device

    def deactivate_device(self, user: User, device_id: str, now: datetime) -> Device:
        """Deactivate the person's own active device, as JDN's deactivation does (it receives
        no OTP from now on), audited with the person as actor."""
        device = self.own_active_device(user, device_id)
        return self.devices.deactivate_by_administrator(person_caller(user), device.id, now)

    # -- contact details ----------------------------------------------------------------------

    def pending_email(self, user: User, now: datetime) -> str | None:
        return self.contacts.pending_email(user, now)

    def request_email_change(self, user: User, new_address: str, now: datetime) -> None:
        """E-mail a confirmation link to the new address; the address changes only once it is
        confirmed (the API's PATCH /v1/users/{mykad} does the same)."""
        self.contacts.update(
            person_caller(user), user.mykad, ContactChanges(email=new_address), now
        )


def _credential_row(credential: Credential, now: datetime) -> CredentialRow:
    fingerprint = None
    if credential.certificate_pem:
        certificate = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    return CredentialRow(
        id=credential.id,
        medium=credential.medium,
        status=effective_status(credential, now),
        serial=credential.certificate_serial or credential.token_serial,
        key_algorithm=credential.key_algorithm,
        not_before=credential.not_before,
        not_after=credential.not_after,
        fingerprint=fingerprint,
        has_certificate=bool(credential.certificate_pem),
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
