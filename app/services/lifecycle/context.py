"""What the lifecycle use cases share: one session and the collaborators around it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.keystore import KeyStore
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.lifecycle.tokens import TokenService
from app.services.mail.notices import NoticeContext
from app.settings import Settings


@dataclass
class LifecycleContext:
    """One unit of work's session, settings, keys, CA, audit log and notices, for the lifecycle
    services.

    Built by `app.units.Services.lifecycle` only."""

    session: Session
    settings: Settings
    keys: Secrets = field(repr=False)
    key_store: KeyStore
    ca: CertificateAuthorityService
    audit: AuditLog
    notices: NoticeContext

    @property
    def tokens(self) -> TokenService:
        return TokenService(self.session, self.keys.token_mac, self.audit)
