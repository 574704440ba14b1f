"""The long-lived collaborators of one process, built once from the settings."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from functools import cached_property
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock, SystemClock
from app.crypto.custody import build_secrets
from app.crypto.keys import DerivedKeys, Secrets
from app.crypto.keystore import KeyStore, SoftwareKeyStore
from app.db import (
    NotificationListener,
    connect_arguments,
    connection_capacity,
    make_engine,
    make_sessionmaker,
)
from app.services.audit.log import AuditLog
from app.services.ca import CaCache
from app.services.clients import API_KEYS_CHANGED, ApiKeyCache
from app.services.mail.courier import COURIER_KEY, Courier
from app.services.mail.delivery import DeliveryWorker
from app.services.mail.notices import NoticeContext
from app.services.mail.transport import SmtpTransport
from app.services.trust.material import TrustCache
from app.services.trust.ocsp import OcspResponseCache
from app.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: Secrets = field(repr=False)
    key_store: KeyStore
    clock: Clock
    # Hands the messages this process queues to its own delivery loops (app.services.mail.courier);
    # the sessions carry it, so that `Outbox.enqueue` finds it.
    courier: Courier = field(default_factory=Courier)
    ca_cache: CaCache = field(default_factory=CaCache)
    trust_cache: TrustCache = field(default_factory=TrustCache)
    ocsp_responses: OcspResponseCache = field(default_factory=OcspResponseCache)
    # API keys verified here, forgotten when any process rotates or revokes one (PostgreSQL).
    api_keys: ApiKeyCache = field(default_factory=ApiKeyCache)
    _tsa_client: httpx.Client | None = field(default=None, repr=False)
    _key_listener: NotificationListener | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _database_slots: asyncio.Semaphore | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        settings.check_production_safety()
        key_store = build_key_store(settings)
        engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
        courier = Courier()
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine, info={COURIER_KEY: courier}),
            keys=build_secrets(settings, key_store),
            key_store=key_store,
            clock=clock or SystemClock(),
            courier=courier,
        )

    @cached_property
    def notices(self) -> NoticeContext:
        """How the person's notices are written: the outbox's seal, times in settings.timezone."""
        return NoticeContext(self.keys.outbox_seal, ZoneInfo(self.settings.timezone))

    def audit_log(self, session: Session) -> AuditLog:
        return AuditLog(session, self.keys.audit_mac, self.keys.subject_ref)

    def delivery_worker(self) -> DeliveryWorker:
        return DeliveryWorker(
            self.sessions,
            self.keys.outbox_seal,
            SmtpTransport(self.settings),
            self.clock,
            self.settings,
            audit=self.audit_log,
        )

    def database_slots(self) -> asyncio.Semaphore:
        """As many concurrent units of work as the pool has connections (created lazily, on the
        serving event loop)."""
        if self._database_slots is None:
            self._database_slots = asyncio.Semaphore(connection_capacity(self.engine))
        return self._database_slots

    def api_key_cache(self) -> ApiKeyCache | None:
        """The verified keys, on PostgreSQL, whose notifications tell every process of a
        rotation or revocation at once (the listener starts on first use); None on SQLite,
        where the CLI that revokes a key is another process nobody would hear."""
        if self.engine.dialect.name != "postgresql":
            return None
        if self._key_listener is None:
            with self._lock:
                if self._key_listener is None:
                    listener = NotificationListener(
                        connect_arguments(self.engine), API_KEYS_CHANGED, self.api_keys.clear
                    )
                    self.api_keys.listen_with(listener.listening)
                    listener.start()
                    self._key_listener = listener
        return self.api_keys

    def stop_listening(self) -> None:
        listener, self._key_listener = self._key_listener, None
        if listener is not None:
            listener.stop()
        self.api_keys.listen_with(lambda: False)
        self.api_keys.clear()

    def tsa_client(self) -> httpx.Client:
        """One HTTP client a process for the remote TSA, so stamps reuse its connections."""
        if self._tsa_client is None:
            self._tsa_client = httpx.Client()
        return self._tsa_client

    def close(self) -> None:
        self.stop_listening()
        if self._tsa_client is not None:
            self._tsa_client.close()
        self.engine.dispose()
        self.key_store.close()


def build_key_store(settings: Settings) -> KeyStore:
    """The process's key store, as `ROAMSIGN_KEY_STORE` says.

    `pkcs11` opens the token and logs in here, once per process (a server's worker processes
    each build their own runtime); a missing module, an unknown label or a refused PIN raise
    a `ConfigurationError` whose one line names the setting to fix.
    """
    if settings.key_store == "pkcs11":
        # Imported only when chosen: the software store needs no PKCS#11 library.
        from app.crypto.pkcs11 import Pkcs11KeyStore

        return Pkcs11KeyStore.from_settings(settings)
    return SoftwareKeyStore(DerivedKeys.from_master(settings.load_master_key()).key_store)
