"""API clients: creation, rotation, revocation and the authentication of a bearer key."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.crypto.secrets import api_key_hash, generate_api_key
from app.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from app.models import ApiClient, Role
from app.services.audit.log import AuditLog

# Every request runs this lookup: built once (building a statement costs more than running
# it), and columns rather than an ORM object, since the caller is a plain value.
_CLIENT_BY_KEY = select(
    ApiClient.id, ApiClient.name, ApiClient.role, ApiClient.agency, ApiClient.key_hash
).where(ApiClient.key_hash == bindparam("digest"), ApiClient.revoked_at.is_(None))


@dataclass(frozen=True)
class Caller:
    """Who is calling: an authenticated API client."""

    id: str
    name: str
    role: Role
    agency: str | None


class ClientService:
    def __init__(self, session: Session, audit: AuditLog) -> None:
        self.session = session
        self.audit = audit

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
        return key

    def revoke(self, name: str, now: datetime) -> None:
        client = self._active(name)
        client.revoked_at = now
        self.audit.record(now=now, action="client.revoked", actor="cli", target_id=client.id)

    def authenticate(self, api_key: str) -> Caller:
        digest = api_key_hash(api_key)
        client = self.session.connection().execute(_CLIENT_BY_KEY, {"digest": digest}).first()
        # The index lookup already matched the digest; compare again in constant time so the
        # answer never depends on how much of it matched.
        if client is None or not hmac.compare_digest(client.key_hash, digest):
            raise Unauthenticated("missing, unknown or revoked API key")
        return Caller(id=client.id, name=client.name, role=Role(client.role), agency=client.agency)

    def _active(self, name: str) -> ApiClient:
        client = self.session.scalar(
            select(ApiClient).where(ApiClient.name == name, ApiClient.revoked_at.is_(None))
        )
        if client is None:
            raise NotFound(f"no active client named {name!r}")
        return client
