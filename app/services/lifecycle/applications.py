"""Roaming applications: from a token user (or a new one) to an active roaming credential.

    opened (awaiting_email_verification) --token from the e-mail--> email_verified
        --JDN approves: the CA issues--> approved (credential pending_pin)
        --the person sets the PIN with the PIN-setup token--> credential active

No signing before the PIN is set: the signing service signs with active credentials only. One
open application per person (a partial unique index settles races). Bulk enrolment
(`app.services.lifecycle.bulk_enrolment`) opens applications for many people at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NoEmailAddress, NotFound
from app.models import (
    ApplicationStatus,
    Credential,
    CredentialStatus,
    RoamingApplication,
    Role,
    TokenPurpose,
    User,
)
from app.services.clients import Caller
from app.services.lifecycle.bulk_enrolment import BulkEnrolment, EnrolmentResult
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.services.lifecycle.credentials import CredentialService, holds_current_roaming
from app.services.lifecycle.opening import (
    new_application_row,
    record_opened,
    send_application_verification,
)
from app.services.lifecycle.people import PeopleService
from app.services.lifecycle.tokens import TokenSent
from app.services.mail.texts.common import mask_email


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
        application = new_application_row(user, origin, caller.name, now)
        try:
            with self.session.begin_nested():
                self.session.add(application)
        except IntegrityError:
            raise Conflict("this person already has an open roaming application") from None
        send_application_verification(self.context, user, application, now)
        record_opened(self.audit, caller.name, user.mykad, application.id, application.origin, now)
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
        if not self._move(
            application,
            ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
            status=ApplicationStatus.EMAIL_VERIFIED,
            email_verified_at=now,
        ):
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
        if not self._move(
            application,
            ApplicationStatus.EMAIL_VERIFIED,
            status=ApplicationStatus.APPROVED,
            approved_at=now,
        ):
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

    def enrol(self, actor: str, mykads: Sequence[str], now: datetime) -> list[EnrolmentResult]:
        """See `BulkEnrolment.enrol`."""
        return BulkEnrolment(self.context).enrol(actor, mykads, now)

    def _move(
        self, application: RoamingApplication, expected: ApplicationStatus, **values: Any
    ) -> bool:
        """Change the application only while it is still `expected`: of two concurrent steps,
        one wins."""
        moved = self.session.execute(
            update(RoamingApplication)
            .where(
                RoamingApplication.id == application.id,
                RoamingApplication.status == expected,
            )
            .values(**values)
            .returning(RoamingApplication.id)
            .execution_options(synchronize_session=False)
        ).first()
        return moved is not None
