"""API clients: creation, rotation, revocation and the authentication of a bearer key."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.crypto.secrets import api_key_hash, generate_api_key
from app.db import after_commit
from app.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from app.models import ApiClient, Role
from app.services.audit.log import AuditLog

# Every request runs this lookup: built once (building a statement costs more than running
# it), and columns rather than an ORM object, since the caller is a plain value.
_CLIENT_BY_KEY = select(
    ApiClient.id, ApiClient.name, ApiClient.role, ApiClient.agency, ApiClient.key_hash
).where(ApiClient.key_hash == bindparam("digest"), ApiClient.revoked_at.is_(None))


# The channel on which a rotation or revocation tells every process to forget the keys it
# verified (PostgreSQL NOTIFY, sent by the commit that changes the key).
API_KEYS_CHANGED = "roamsign_api_keys"
_NOTIFY_KEYS_CHANGED = select(func.pg_notify(API_KEYS_CHANGED, ""))
# A backstop only: a verified key is forgotten this long after its check whatever happens.
KEY_CACHE_SECONDS = 30.0


class ApiKeyCache:
    """The API keys this process verified, so that a request needs no lookup of its key.

    Trusted only while `listening()` says rotations and revocations reach it (their commit
    notifies every process, app.db.NotificationListener, which calls `clear`); otherwise
    every key is looked up. Keys are held by their digest; refusals are never cached (a new
    key works at once). `KEY_CACHE_SECONDS` bounds an entry's life as a backstop."""

    def __init__(
        self,
        listening: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        max_age_seconds: float = KEY_CACHE_SECONDS,
    ) -> None:
        self._listening = listening
        self._clock = clock
        self._max_age = max_age_seconds
        self._callers: dict[bytes, tuple[Caller, float]] = {}
        self._generation = 0

    def listen_with(self, listening: Callable[[], bool]) -> None:
        self._listening = listening

    def listening(self) -> bool:
        return self._listening()

    def get(self, digest: str) -> tuple[Caller | None, int]:
        """The caller verified with this digest, if trusted now; and the generation to hand
        back to `put` (a `clear` in between voids that put)."""
        generation = self._generation
        if not self._listening():
            return None, generation
        found = self._callers.get(_cache_key(digest))
        if found is None or self._clock() - found[1] > self._max_age:
            return None, generation
        return found[0], generation

    def put(self, digest: str, caller: Caller, generation: int) -> None:
        if generation == self._generation and self._listening():
            self._callers[_cache_key(digest)] = (caller, self._clock())

    def clear(self) -> None:
        self._generation += 1
        self._callers = {}


def _cache_key(digest: str) -> bytes:
    return digest.encode()


@dataclass(frozen=True)
class Caller:
    """Who is calling: an authenticated API client."""

    id: str
    name: str
    role: Role
    agency: str | None


class ClientService:
    def __init__(
        self, session: Session, audit: AuditLog, key_cache: ApiKeyCache | None = None
    ) -> None:
        self.session = session
        self.audit = audit
        self.key_cache = key_cache

    def create(
        self, name: str, role: str, agency: str | None, now: datetime
    ) -> tuple[ApiClient, str]:
        """A new client and its key; the key is returned once and only its hash is kept."""
        try:
            parsed_role = Role(role)
        except ValueError:
            raise ValidationFailed(f"role must be one of {', '.join(Role)}", "/role") from None
        if parsed_role is Role.AGENCY_ADMIN and not agency:
            raise ValidationFailed("an agency_admin is bound to one agency", "/agency")
        if self.session.scalar(select(ApiClient).where(ApiClient.name == name)) is not None:
            raise Conflict(f"a client named {name!r} exists")
        key = generate_api_key()
        client = ApiClient(
            name=name,
            role=parsed_role,
            agency=agency if parsed_role is Role.AGENCY_ADMIN else None,
            key_hash=api_key_hash(key),
            created_at=now,
        )
        self.session.add(client)
        self.session.flush()
        self.audit.record(
            now=now,
            action="client.created",
            actor="cli",
            target_id=client.id,
            details={"name": name, "role": parsed_role.value},
        )
        return client, key

    def rotate(self, name: str, now: datetime) -> str:
        """A new key for the client; the old one stops working at once."""
        client = self._active(name)
        key = generate_api_key()
        client.key_hash = api_key_hash(key)
        client.rotated_at = now
        self.audit.record(now=now, action="client.rotated", actor="cli", target_id=client.id)
        self._keys_changed()
        return key

    def revoke(self, name: str, now: datetime) -> None:
        client = self._active(name)
        client.revoked_at = now
        self.audit.record(now=now, action="client.revoked", actor="cli", target_id=client.id)
        self._keys_changed()

    def authenticate(self, api_key: str) -> Caller:
        digest = api_key_hash(api_key)
        generation = 0
        if self.key_cache is not None:
            # A dict lookup by the digest of a random 256-bit key: its timing says nothing
            # about a key nobody has (an attacker cannot choose digests near a real one).
            cached, generation = self.key_cache.get(digest)
            if cached is not None:
                return cached
        client = self.session.connection().execute(_CLIENT_BY_KEY, {"digest": digest}).first()
        # The index lookup already matched the digest; compare again in constant time so the
        # answer never depends on how much of it matched.
        if client is None or not hmac.compare_digest(client.key_hash, digest):
            raise Unauthenticated("missing, unknown or revoked API key")
        caller = Caller(
            id=client.id, name=client.name, role=Role(client.role), agency=client.agency
        )
        if self.key_cache is not None:
            self.key_cache.put(digest, caller, generation)
        return caller

    def _keys_changed(self) -> None:
        """Every process forgets the keys it verified once this change commits: PostgreSQL
        delivers the notification with the commit (to every listener, this process's too);
        this process also forgets at once, and SQLite has no other server process."""
        connection = self.session.connection()
        if connection.dialect.name == "postgresql":
            connection.execute(_NOTIFY_KEYS_CHANGED)
        if self.key_cache is not None:
            after_commit(self.session, self.key_cache.clear)

    def _active(self, name: str) -> ApiClient:
        client = self.session.scalar(
            select(ApiClient).where(ApiClient.name == name, ApiClient.revoked_at.is_(None))
        )
        if client is None:
            raise NotFound(f"no active client named {name!r}")
        return client
