"""Bulk enrolment: applications opened for many existing people at once, idempotently.

Nobody registers again (FAQ 10-13); people already roaming, or with an open application, get
nothing new. The CSV file's streaming and batching are `app.services.lifecycle.enrolment`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.models import Credential, Medium, RoamingApplication, User
from app.models.lifecycle import OPEN_APPLICATION_STATUSES
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credentials import CURRENT_ROAMING_STATUSES
from app.services.lifecycle.opening import (
    issue_application_token,
    new_application_row,
    queue_verification,
    record_opened,
    verification_notice,
)
from app.services.lifecycle.tokens import IssuedToken
from app.services.mail.texts.tokens import ApplicationVerificationNotice
from app.validation import normalise_mykad

MAX_ENROLMENT_BATCH = 1000


class EnrolmentOutcome(StrEnum):
    ENROLLED = "enrolled"  # application opened, verification e-mail queued
    ALREADY_ENROLLED = "already_enrolled"  # an application is open already: nothing sent
    ALREADY_ROAMING = "already_roaming"
    UNKNOWN_PERSON = "unknown_person"
    INVALID_MYKAD = "invalid_mykad"
    NO_EMAIL = "no_email"


@dataclass(frozen=True)
class EnrolmentResult:
    mykad: str  # normalised, or as given when it is not a valid MyKad
    outcome: EnrolmentOutcome
    application_id: str | None = None


class BulkEnrolment:
    """Opens the applications of a batch in the caller's session; never commits."""

    def __init__(self, context: LifecycleContext) -> None:
        self.context = context
        self.session = context.session
        self.audit = context.audit

    def enrol(self, actor: str, mykads: Sequence[str], now: datetime) -> list[EnrolmentResult]:
        """Open an application (and queue its verification e-mail) for each person, in order.

        Idempotent: people already roaming, or with an open application, get nothing new.
        Reads the batch's people, credentials and applications in three queries. If another
        enrolment opens an application for one of them meanwhile, the unique index refuses
        this batch's insert and the batch is done again, seeing it.
        """
        if len(mykads) > MAX_ENROLMENT_BATCH:
            raise ValueError(f"at most {MAX_ENROLMENT_BATCH} people per batch")
        try:
            with self.session.begin_nested():
                return self._enrol_batch(actor, mykads, now)
        except IntegrityError:
            with self.session.begin_nested():
                return self._enrol_batch(actor, mykads, now)

    def _enrol_batch(
        self, actor: str, mykads: Sequence[str], now: datetime
    ) -> list[EnrolmentResult]:
        normalised = [_normalised_or_none(given) for given in mykads]
        wanted = {mykad for mykad in normalised if mykad is not None}
        users = self._users_by_mykad(wanted)
        user_ids = [user.id for user in users.values()]
        roaming = self._current_roaming_holders(user_ids, now)
        open_applications = self._open_applications(user_ids)

        results: list[EnrolmentResult] = []
        to_enrol: list[tuple[User, RoamingApplication]] = []
        for given, mykad in zip(mykads, normalised, strict=True):
            if mykad is None:
                results.append(EnrolmentResult(given.strip(), EnrolmentOutcome.INVALID_MYKAD))
                continue
            user = users.get(mykad)
            if user is None:
                results.append(EnrolmentResult(mykad, EnrolmentOutcome.UNKNOWN_PERSON))
            elif user.id in roaming:
                results.append(EnrolmentResult(mykad, EnrolmentOutcome.ALREADY_ROAMING))
            elif user.id in open_applications:
                results.append(
                    EnrolmentResult(
                        mykad, EnrolmentOutcome.ALREADY_ENROLLED, open_applications[user.id]
                    )
                )
            elif not user.email:
                results.append(EnrolmentResult(mykad, EnrolmentOutcome.NO_EMAIL))
            else:
                application = new_application_row(user, "enrolment", actor, now)
                to_enrol.append((user, application))
                open_applications[user.id] = application.id
                results.append(EnrolmentResult(mykad, EnrolmentOutcome.ENROLLED, application.id))
        # The batch's applications and tokens in two multi-row INSERTs; what remains per person
        # is the sealed e-mail and the audit event.
        self.session.add_all([application for _user, application in to_enrol])
        mailings = [
            _Mailing.of(
                user,
                application,
                issue_application_token(self.context, user, application, now, new_application=True),
                self.context.settings.token_link_base,
            )
            for user, application in to_enrol
        ]
        self.session.flush()
        # Only plain values from here on: the flushed rows leave the session's identity map
        # (it holds them weakly), which every ORM UPDATE of the loop below would otherwise scan.
        del users, to_enrol
        for mailing in mailings:
            queue_verification(self.context, mailing.email, mailing.notice, now)
            record_opened(
                self.audit, actor, mailing.mykad, mailing.notice.application_id, "enrolment", now
            )
        self.session.flush()
        return results

    def _users_by_mykad(self, mykads: Iterable[str]) -> dict[str, User]:
        wanted = list(mykads)
        if not wanted:
            return {}
        return {
            user.mykad: user
            for user in self.session.scalars(select(User).where(User.mykad.in_(wanted)))
        }

    def _current_roaming_holders(self, user_ids: list[str], now: datetime) -> set[str]:
        if not user_ids:
            return set()
        return set(
            self.session.scalars(
                select(Credential.user_id).where(
                    Credential.user_id.in_(user_ids),
                    Credential.medium == Medium.ROAMING,
                    Credential.status.in_(CURRENT_ROAMING_STATUSES),
                    Credential.not_after > now,
                )
            )
        )

    def _open_applications(self, user_ids: list[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        rows = self.session.execute(
            select(RoamingApplication.user_id, RoamingApplication.id).where(
                RoamingApplication.user_id.in_(user_ids),
                RoamingApplication.status.in_(OPEN_APPLICATION_STATUSES),
            )
        )
        return {user_id: application_id for user_id, application_id in rows}


@dataclass(frozen=True)
class _Mailing:
    mykad: str
    email: str
    notice: ApplicationVerificationNotice

    @classmethod
    def of(
        cls,
        user: User,
        application: RoamingApplication,
        issued: IssuedToken,
        link_base: str | None,
    ) -> _Mailing:
        assert user.email is not None
        return cls(
            user.mykad, user.email, verification_notice(user, application.id, issued, link_base)
        )


def _normalised_or_none(given: str) -> str | None:
    try:
        return normalise_mykad(given)
    except ValueError:
        return None
