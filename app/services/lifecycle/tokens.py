"""One-time tokens e-mailed to a person: address verification, PIN setup, PIN reset.

A token is 192 random bits, shown once (in its e-mail) and kept only as an HMAC under the token
MAC key (`Secrets.token_mac`), bound to its purpose and subject (an application, a credential, a
person): a token for one application never verifies another. It is single-use, expires, and a
newer token for the same purpose and subject ends the older one. Its entropy makes guessing
pointless, so wrong tries are audited, not counted.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.crypto.keys import MacKey
from app.db import keep_changes
from app.errors import RateLimited, TokenConsumed, TokenExpired, TokenNotValid
from app.models import OneTimeToken, TokenPurpose, User
from app.models.base import new_id
from app.services.audit.log import AuditLog

TOKEN_BYTES = 24
RATE_WINDOW = timedelta(hours=24)


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_mac(key: MacKey, purpose: str, subject_id: str, token: str) -> bytes:
    message = b"".join(
        len(part).to_bytes(4, "big") + part
        for part in (purpose.encode(), subject_id.encode(), token.encode())
    )
    return key.mac(message)


@dataclass(frozen=True, repr=False)
class IssuedToken:
    row: OneTimeToken
    token: str  # the secret: for the e-mail only, never stored or logged

    def __repr__(self) -> str:
        return f"IssuedToken(id={self.row.id!r}, purpose={self.row.purpose!r})"


@dataclass(frozen=True)
class TokenSent:
    """What the caller is told when a token is e-mailed: where (masked) and until when."""

    destination: str
    expires_at: datetime
    purpose: TokenPurpose


class TokenService:
    """Issues and consumes tokens in the caller's session; never commits."""

    def __init__(self, session: Session, mac_key: MacKey, audit: AuditLog) -> None:
        self.session = session
        self._mac_key = mac_key
        self.audit = audit

    def issue(
        self,
        *,
        purpose: TokenPurpose,
        subject_id: str,
        user: User,
        email: str,
        ttl_seconds: int,
        now: datetime,
        on_request: bool = False,
        new_subject: bool = False,
    ) -> IssuedToken:
        """A new token for (purpose, subject); any earlier one for it stops working.

        `new_subject`: the subject was created in this transaction, so there is no earlier
        token to end (spares a statement per person in bulk enrolment).
        """
        if not new_subject:
            self._supersede(purpose, subject_id, now)
        token = generate_token()
        row = OneTimeToken(
            id=new_id(),
            purpose=purpose,
            subject_id=subject_id,
            user_id=user.id,
            token_mac=token_mac(self._mac_key, purpose, subject_id, token),
            email=email,
            is_on_request=on_request,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        self.session.add(row)  # flushed with the caller's next statement or commit
        return IssuedToken(row, token)

    def check_rate(
        self,
        user: User,
        purposes: Collection[TokenPurpose],
        limit: int,
        now: datetime,
        what: str,
    ) -> None:
        """At most `limit` tokens sent on request for these purposes in any 24 hours.

        The person's row is locked first, so two concurrent requests cannot both take the
        last one (SQLite's write lock serialises them anyway).
        """
        self.session.execute(select(User.id).where(User.id == user.id).with_for_update())
        window_start = now - RATE_WINDOW
        recent = select(OneTimeToken.created_at).where(
            OneTimeToken.user_id == user.id,
            OneTimeToken.purpose.in_(list(purposes)),
            OneTimeToken.is_on_request.is_(True),
            OneTimeToken.created_at > window_start,
        )
        count = self.session.scalar(select(func.count()).select_from(recent.subquery()))
        if (count or 0) < limit:
            return
        oldest = self.session.scalar(select(func.min(recent.subquery().c.created_at)))
        assert oldest is not None
        keep_changes(self.session)
        raise RateLimited(
            f"at most {limit} {what} a day for one person; try again later",
            retry_after_seconds=int((oldest + RATE_WINDOW - now).total_seconds() + 0.999),
        )

    def consume(
        self,
        *,
        purpose: TokenPurpose,
        subject_id: str,
        token: str,
        now: datetime,
        actor: str,
        mykad: str | None,
        recognised: Collection[TokenPurpose] = (),
    ) -> OneTimeToken:
        """Use the token once, or refuse it (audited): not valid, expired, or used/replaced.

        `recognised`: other purposes a token for this subject may have had (a PIN-setup token
        presented once the PIN is set), so that an old one is answered as used, not as wrong.
        """
        purposes = [purpose, *recognised]
        row = self.session.scalar(
            select(OneTimeToken).where(
                OneTimeToken.subject_id == subject_id,
                or_(
                    *(
                        and_(
                            OneTimeToken.purpose == candidate,
                            OneTimeToken.token_mac
                            == token_mac(self._mac_key, candidate, subject_id, token),
                        )
                        for candidate in purposes
                    )
                ),
            )
        )
        if row is None:
            self._rejected(purpose, subject_id, "not_valid", actor, mykad, now)
            keep_changes(self.session)
            raise TokenNotValid()
        if row.used_at is not None:
            self._rejected(purpose, subject_id, "used", actor, mykad, now)
            keep_changes(self.session)
            raise TokenConsumed("this token was already used")
        if row.superseded_at is not None:
            self._rejected(purpose, subject_id, "superseded", actor, mykad, now)
            keep_changes(self.session)
            raise TokenConsumed(
                "this token was replaced by a newer one (or the e-mail address changed); "
                "use the latest e-mail"
            )
        if now >= row.expires_at:
            self._rejected(purpose, subject_id, "expired", actor, mykad, now)
            keep_changes(self.session)
            raise TokenExpired("this token has expired; ask for a new one")
        if row.purpose != purpose:
            self._rejected(purpose, subject_id, "not_valid", actor, mykad, now)
            keep_changes(self.session)
            raise TokenNotValid()
        used = self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.id == row.id,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.superseded_at.is_(None),
            )
            .values(used_at=now)
            .returning(OneTimeToken.id)
            .execution_options(synchronize_session=False)
        ).first()
        if used is None:
            # Another request used (or replaced) it between our read and this update.
            self._rejected(purpose, subject_id, "used", actor, mykad, now)
            keep_changes(self.session)
            raise TokenConsumed("this token was already used")
        self.session.refresh(row)
        return row

    def supersede_for_person(self, user_id: str, now: datetime) -> None:
        """End every outstanding token of a person (their address changed: the old one must
        no longer verify, set or reset anything)."""
        self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user_id,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.superseded_at.is_(None),
            )
            .values(superseded_at=now)
            .execution_options(synchronize_session=False)
        )

    def supersede_subject(self, subject_id: str, now: datetime) -> None:
        """End every outstanding token about this subject (a revoked or replaced credential)."""
        self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.subject_id == subject_id,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.superseded_at.is_(None),
            )
            .values(superseded_at=now)
            .execution_options(synchronize_session=False)
        )

    def outstanding(
        self, purpose: TokenPurpose, subject_id: str, now: datetime
    ) -> OneTimeToken | None:
        """The live token for (purpose, subject), if any (not used, replaced or expired)."""
        return self.session.scalar(
            select(OneTimeToken).where(
                OneTimeToken.purpose == purpose,
                OneTimeToken.subject_id == subject_id,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.superseded_at.is_(None),
                OneTimeToken.expires_at > now,
            )
        )

    def _supersede(self, purpose: TokenPurpose, subject_id: str, now: datetime) -> None:
        self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.purpose == purpose,
                OneTimeToken.subject_id == subject_id,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.superseded_at.is_(None),
            )
            .values(superseded_at=now)
            .execution_options(synchronize_session=False)
        )

    def _rejected(
        self,
        purpose: TokenPurpose,
        subject_id: str,
        why: str,
        actor: str,
        mykad: str | None,
        now: datetime,
    ) -> None:
        self.audit.record(
            now=now,
            action="email_token.rejected",
            actor=actor,
            mykad=mykad,
            target_id=subject_id,
            outcome=why,
            details={"purpose": purpose.value},
        )
