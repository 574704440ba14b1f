"""What the lifecycle use cases share: one session and the collaborators around it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.crypto.keys import SealKey, Secrets
from app.crypto.keystore import KeyStore
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.lifecycle.tokens import TokenService
from app.settings import Settings


@dataclass
class LifecycleContext:
    """One unit of work's session, settings, keys, CA and audit log, for the lifecycle services.

    Built by `app.units.Services.lifecycle` only."""

    session: Session
    settings: Settings
    keys: Secrets = field(repr=False)
    key_store: KeyStore
    ca: CertificateAuthorityService
    audit: AuditLog

    @property
    def tokens(self) -> TokenService:
        return TokenService(self.session, self.keys.token_mac, self.audit)

    @property
    def seal_key(self) -> SealKey:
        return self.keys.outbox_seal
