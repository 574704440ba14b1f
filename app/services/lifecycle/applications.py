"""Roaming applications: from a token user (or a new one) to an active roaming credential.

    opened (awaiting_email_verification) --token from the e-mail--> email_verified
        --JDN approves: the CA issues--> approved (credential pending_pin)
        --the person sets the PIN with the PIN-setup token--> credential active

No signing before the PIN is set: the signing service signs with active credentials only. One
open application per person (a partial unique index settles races). Bulk enrolment opens
applications for many existing people at once, idempotently: nobody registers again (FAQ 10-13).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NoEmailAddress, NotFound
from app.models import (
    ApplicationStatus,
    Credential,
    CredentialStatus,
    Medium,
    RoamingApplication,
    Role,
    TokenPurpose,
    User,
)
from app.models.base import new_id
from app.models.lifecycle import OPEN_APPLICATION_STATUSES
from app.services.clients import Caller
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credentials import (
    CURRENT_ROAMING_STATUSES,
    CredentialLifecycle,
    CredentialService,
    holds_current_roaming,
)
from app.services.lifecycle.people import (
    PeopleService,
    issue_application_token,
    send_application_verification,
)
from app.services.lifecycle.tokens import IssuedToken, TokenSent
from app.services.mail.notices import queue_notice
from app.services.mail.texts.common import mask_email
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


class ApplicationService:
    def __init__(self, context: LifecycleContext) -> None:
        self.context = context
        self.session = context.session
        self.audit = context.audit
        self.people = PeopleService(context.session, context.audit)

    # -- reading ------------------------------------------------------------------------------

    def get_for(self, caller: Caller, application_id: str) -> RoamingApplication:
        application = self.session.get(RoamingApplication, application_id)
        if application is None:
            raise NotFound("no such application")
        user = self.session.get(User, application.user_id)
        assert user is not None  # foreign key
        try:
            PeopleService.check_visible(caller, user)
        except NotFound:
            raise NotFound("no such application") from None
        return application

    def holder(self, application: RoamingApplication) -> User:
        user = self.session.get(User, application.user_id)
        assert user is not None  # foreign key
        return user

    # -- the workflow -------------------------------------------------------------------------

    def open(self, caller: Caller, mykad: str, now: datetime) -> RoamingApplication:
        """Open an application and e-mail the registered address its verification token."""
        user = self.people.get_for(caller, mykad)
        if holds_current_roaming(self.session, user.id, now):
            raise Conflict("this person already holds a roaming credential")
        if not user.email:
            raise NoEmailAddress("the application is verified by e-mail: register an address")
        origin = "jdn_admin" if caller.role is Role.JDN_ADMIN else "portal"
        application = self._new_application(user, origin, caller.name, now)
        try:
            with self.session.begin_nested():
                self.session.add(application)
        except IntegrityError:
            raise Conflict("this person already has an open roaming application") from None
        send_application_verification(self.context, user, application, now)
        self._record_opened(caller.name, user, application, now)
        return application

    def verify_email(
        self, caller: Caller, application_id: str, token: str, now: datetime
    ) -> RoamingApplication:
        application = self.get_for(caller, application_id)
        user = self.holder(application)
        self.context.tokens.consume(
            purpose=TokenPurpose.APPLICATION_EMAIL,
            subject_id=application.id,
            token=token,
            now=now,
            actor=caller.name,
            mykad=user.mykad,
        )
        verified = self.session.execute(
            update(RoamingApplication)
            .where(
                RoamingApplication.id == application.id,
                RoamingApplication.status == ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
            )
            .values(status=ApplicationStatus.EMAIL_VERIFIED, email_verified_at=now)
            .returning(RoamingApplication.id)
            .execution_options(synchronize_session=False)
        ).first()
        if verified is None:
            raise Conflict(f"the application is {application.status}, not awaiting verification")
        self.session.refresh(application)
        self.audit.record(
            now=now,
            action="application.email_verified",
            actor=caller.name,
            mykad=user.mykad,
            target_id=application.id,
        )
        return application

    def resend(self, caller: Caller, application_id: str, now: datetime) -> TokenSent:
        """Send the pending step's e-mail again with a new token (the old one stops working):
        the address verification, or after approval the PIN setup. Rate-limited per person."""
        application = self.get_for(caller, application_id)
        user = self.holder(application)
        credential = (
            self.session.get(Credential, application.credential_id)
            if application.credential_id
            else None
        )
        if application.status == ApplicationStatus.AWAITING_EMAIL_VERIFICATION:
            purpose = TokenPurpose.APPLICATION_EMAIL
        elif (
            application.status == ApplicationStatus.APPROVED
            and credential is not None
            and credential.status == CredentialStatus.PENDING_PIN
        ):
            purpose = TokenPurpose.PIN_SETUP
        else:
            raise Conflict(
                f"nothing to resend: the application is {application.status}"
                + (f" and its credential {credential.status}" if credential else "")
            )
        if not user.email:
            raise NoEmailAddress("this person has no registered e-mail address")
        settings = self.context.settings
        self.context.tokens.check_rate(
            user,
            [TokenPurpose.APPLICATION_EMAIL, TokenPurpose.PIN_SETUP],
            settings.token_emails_per_day,
            now,
            "resent notifications",
        )
        if purpose is TokenPurpose.APPLICATION_EMAIL:
            issued = send_application_verification(
                self.context, user, application, now, on_request=True
            )
        else:
            assert credential is not None
            issued = CredentialLifecycle(self.context).send_pin_setup(
                user, credential, now, on_request=True
            )
        self.audit.record(
            now=now,
            action="application.notification_resent",
            actor=caller.name,
            mykad=user.mykad,
            target_id=application.id,
            details={"purpose": purpose.value},
        )
        return TokenSent(mask_email(user.email), issued.row.expires_at, purpose)

    def approve(
        self, caller: Caller, application_id: str, key_algorithm: str | None, now: datetime
    ) -> RoamingApplication:
        """The CA issues the roaming certificate; the person then sets the PIN (e-mailed
        token). Refused before the address is verified."""
        application = self.get_for(caller, application_id)
        user = self.holder(application)
        if application.status == ApplicationStatus.AWAITING_EMAIL_VERIFICATION:
            raise Conflict("the person's e-mail address is not verified yet")
        if application.status != ApplicationStatus.EMAIL_VERIFIED:
            raise Conflict(f"the application is already {application.status}")
        if holds_current_roaming(self.session, user.id, now):
            raise Conflict("this person already holds a roaming credential")
        claimed = self.session.execute(
            update(RoamingApplication)
            .where(
                RoamingApplication.id == application.id,
                RoamingApplication.status == ApplicationStatus.EMAIL_VERIFIED,
            )
            .values(status=ApplicationStatus.APPROVED, approved_at=now)
            .returning(RoamingApplication.id)
            .execution_options(synchronize_session=False)
        ).first()
        if claimed is None:
            raise Conflict("the application was approved meanwhile")
        # A roaming credential the person still has can only be an expired one (checked
        # above): the new one replaces it once its PIN is set, as a renewal would.
        expired = CredentialService.current_roaming(self.session, user.id)
        credential, _issued = CredentialLifecycle(self.context).issue_pending(
            user,
            key_algorithm or self.context.settings.key_algorithm,
            now,
            caller.name,
            replaces=expired,
        )
        self.session.execute(
            update(RoamingApplication)
            .where(RoamingApplication.id == application.id)
            .values(credential_id=credential.id)
            .execution_options(synchronize_session=False)
        )
        self.session.refresh(application)
        self.audit.record(
            now=now,
            action="application.approved",
            actor=caller.name,
            mykad=user.mykad,
            target_id=application.id,
            details={"credential": credential.id},
        )
        return application

    # -- bulk enrolment -----------------------------------------------------------------------

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
                application = self._new_application(user, "enrolment", actor, now)
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
            )
            for user, application in to_enrol
        ]
        self.session.flush()
        # Only plain values from here on: the flushed rows leave the session's identity map
        # (it holds them weakly), which every ORM UPDATE of the loop below would otherwise scan.
        del users, to_enrol
        for mailing in mailings:
            queue_notice(
                self.session,
                self.context.seal_key,
                purpose="application_email",
                recipient=mailing.email,
                notice=mailing.notice,
                now=now,
                not_after=mailing.notice.expires_at,
            )
            self.audit.record(
                now=now,
                action="application.opened",
                actor=actor,
                mykad=mailing.mykad,
                target_id=mailing.notice.application_id,
                details={"origin": "enrolment"},
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

    # -- the steps ----------------------------------------------------------------------------

    @staticmethod
    def _new_application(user: User, origin: str, actor: str, now: datetime) -> RoamingApplication:
        return RoamingApplication(
            id=new_id(),
            user_id=user.id,
            status=ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
            origin=origin,
            opened_by=actor,
            created_at=now,
        )

    def _record_opened(
        self, actor: str, user: User, application: RoamingApplication, now: datetime
    ) -> None:
        self.audit.record(
            now=now,
            action="application.opened",
            actor=actor,
            mykad=user.mykad,
            target_id=application.id,
            details={"origin": application.origin},
        )


@dataclass(frozen=True)
class _Mailing:
    mykad: str
    email: str
    notice: ApplicationVerificationNotice

    @classmethod
    def of(cls, user: User, application: RoamingApplication, issued: IssuedToken) -> _Mailing:
        assert user.email is not None
        notice = ApplicationVerificationNotice(
            token=issued.token,
            name=user.name,
            expires_at=issued.row.expires_at,
            application_id=application.id,
        )
        return cls(user.mykad, user.email, notice)


def _normalised_or_none(given: str) -> str | None:
    try:
        return normalise_mykad(given)
    except ValueError:
        return None
