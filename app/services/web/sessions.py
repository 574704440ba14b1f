"""Cookie sessions of the pages: a random token in the cookie, its SHA-256 in `web_sessions`;
a session ends when idle too long, at its absolute end, or on sign-out."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import User, WebSession
from app.settings import Settings


def token_hash(token: str) -> str:
    # A 256-bit random token: a fast hash is enough, and lets the row be found by an index.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    """Who a live session belongs to."""

    session_id: str
    user: User
    realm: str


class WebSessionService:
    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    def start(self, user: User, realm: str, now: datetime) -> str:
        """A new session for `user`; returns the cookie's token (shown once, never stored)."""
        token = secrets.token_urlsafe(32)
        self.session.add(
            WebSession(
                token_hash=token_hash(token),
                user_id=user.id,
                realm=realm,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=self.settings.web_session_max_seconds),
            )
        )
        return token

    def resolve(self, token: str | None, realm: str, now: datetime) -> SignedIn | None:
        """The live session of this cookie in this realm (and it was seen now), else None."""
        if not token:
            return None
        found = self.session.scalar(
            select(WebSession).where(WebSession.token_hash == token_hash(token))
        )
        idle = timedelta(seconds=self.settings.web_session_idle_seconds)
        if (
            found is None
            or found.realm != realm
            or found.ended_at is not None
            or found.expires_at <= now
            or found.last_seen_at + idle <= now
        ):
            return None
        found.last_seen_at = now
        user = self.session.get(User, found.user_id)
        assert user is not None  # foreign key
        return SignedIn(found.id, user, realm)

    def end(self, token: str | None, now: datetime) -> None:
        if not token:
            return
        self.session.execute(
            update(WebSession)
            .where(WebSession.token_hash == token_hash(token), WebSession.ended_at.is_(None))
            .values(ended_at=now)
        )
