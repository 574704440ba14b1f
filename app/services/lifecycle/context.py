"""What the lifecycle use cases share: one session and the collaborators around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.crypto.keys import DerivedKeys
from app.crypto.keystore import KeyStore
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.lifecycle.tokens import TokenService
from app.settings import Settings

if TYPE_CHECKING:
    from app.runtime import Runtime


@dataclass
class LifecycleContext:
    """One unit of work's session, settings, keys, CA and audit log, for the lifecycle services."""

    session: Session
    settings: Settings
    keys: DerivedKeys = field(repr=False)
    key_store: KeyStore
    ca: CertificateAuthorityService
    audit: AuditLog

    @classmethod
    def for_runtime(cls, runtime: Runtime, session: Session) -> LifecycleContext:
        return cls(
            session=session,
            settings=runtime.settings,
            keys=runtime.keys,
            key_store=runtime.key_store,
            ca=CertificateAuthorityService(
                session,
                runtime.key_store,
                runtime.ca_cache,
                runtime.settings.ca_name,
                runtime.settings.public_base_url,
            ),
            audit=runtime.audit_log(session),
        )

    @property
    def tokens(self) -> TokenService:
        return TokenService(self.session, self.keys.token_mac, self.audit)

    @property
    def seal_key(self) -> bytes:
        return self.keys.outbox_seal
