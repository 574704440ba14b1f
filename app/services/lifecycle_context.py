"""What the lifecycle use cases share: one session and the collaborators around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.crypto.keys import DerivedKeys
from app.crypto.keystore import KeyStore
from app.db import after_commit
from app.services.audit import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.tokens import TokenService
from app.settings import Settings

if TYPE_CHECKING:
    from app.runtime import Runtime


@dataclass
class LifecycleContext:
    """One unit of work's session, settings, keys, CA and audit log, for the lifecycle services.

    `on_outbox` wakes the delivery worker; `mail_queued()` schedules it for after the commit
    (before it the worker cannot see the rows), once per unit of work.
    """

    session: Session
    settings: Settings
    keys: DerivedKeys = field(repr=False)
    key_store: KeyStore
    ca: CertificateAuthorityService
    audit: AuditLog
    on_outbox: Callable[[], None] | None = None
    _wake_scheduled: bool = field(default=False, repr=False)

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
            on_outbox=runtime.delivery_wakeup.set,
        )

    @property
    def tokens(self) -> TokenService:
        return TokenService(self.session, self.keys.token_mac, self.audit)

    @property
    def seal_key(self) -> bytes:
        return self.keys.outbox_seal

    def mail_queued(self) -> None:
        if self.on_outbox is not None and not self._wake_scheduled:
            self._wake_scheduled = True
            after_commit(self.session, self.on_outbox)
