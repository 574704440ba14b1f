"""Changes to a person's contact details: e-mail address, phone number, agency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from app.models import ApplicationStatus, RoamingApplication, TokenPurpose, User
from app.services.clients import Caller
from app.services.devices.deactivation import deactivate_for_phone_change
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.opening import send_application_verification
from app.services.lifecycle.people import PeopleService
from app.services.mail.notices import queue_email_changed_notice, queue_token_notice
from app.services.mail.texts.common import mask_email
from app.services.mail.texts.tokens import EmailChangeNotice

# Absent from a change: leave the field as it is (None means "remove" for the phone).
UNCHANGED = object()


@dataclass(frozen=True)
class ContactChanges:
    email: str | None = None
    phone: str | object | None = UNCHANGED
    agency: str | None = None


class ContactService:
    """Changes to a person's e-mail address, phone number and agency.

    A new e-mail address takes effect only once the token sent to it is confirmed; then the old
    address is told, every token sent to the old one stops working, and no PIN reset goes to the
    new one for a while (`pin_reset_email_age_seconds`). An agency transfer leaves the
    credentials untouched: they belong to the person (FAQ 8).
    """

    def __init__(self, context: LifecycleContext) -> None:
        self.context = context
        self.session = context.session
        self.audit = context.audit
        self.people = PeopleService(context.session, context.audit)

    def pending_email(self, user: User, now: datetime) -> str | None:
        """The new address waiting for its confirmation, if any."""
        token = self.context.tokens.outstanding(TokenPurpose.EMAIL_CHANGE, user.id, now)
        return token.email if token else None

    def update(self, caller: Caller, mykad: str, changes: ContactChanges, now: datetime) -> User:
        user = self.people.get_for(caller, mykad)
        if changes.email is not None and changes.email != user.email:
            self._request_email_change(caller, user, changes.email, now)
        if changes.phone is not UNCHANGED and changes.phone != user.phone:
            assert changes.phone is None or isinstance(changes.phone, str)
            had_phone = user.phone is not None
            user.phone = changes.phone
            user.updated_at = now
            deactivate_for_phone_change(self.session, self.audit, user.id, now, caller.name)
            self.audit.record(
                now=now,
                action="user.phone_changed",
                actor=caller.name,
                mykad=user.mykad,
                target_id=user.id,
                outcome="removed" if changes.phone is None else "ok",
                details={"had_phone": had_phone},
            )
        if changes.agency is not None and changes.agency != user.agency:
            previous, user.agency = user.agency, changes.agency
            user.updated_at = now
            self.audit.record(
                now=now,
                action="user.agency_changed",
                actor=caller.name,
                mykad=user.mykad,
                target_id=user.id,
                details={"from": previous, "to": changes.agency},
            )
        self.session.flush()
        return user

    def confirm_email(self, caller: Caller, mykad: str, token: str, now: datetime) -> User:
        """Apply the new address whose token this is; tell the old one."""
        user = self.people.get_for(caller, mykad)
        tokens = self.context.tokens
        confirmed = tokens.consume(
            purpose=TokenPurpose.EMAIL_CHANGE,
            subject_id=user.id,
            token=token,
            now=now,
            actor=caller.name,
            mykad=user.mykad,
        )
        old_address, user.email = user.email, confirmed.email
        user.email_changed_at = now
        user.updated_at = now
        # Whatever went to the old address (a PIN reset, a verification) must not work now.
        tokens.supersede_for_person(user.id, now)
        queue_email_changed_notice(self.session, self.context.notices, user, old_address, now)
        self._resend_open_verification(user, now)
        self.audit.record(
            now=now,
            action="user.email_changed",
            actor=caller.name,
            mykad=user.mykad,
            target_id=user.id,
            details={
                "previous": mask_email(old_address) if old_address else None,
                "current": mask_email(confirmed.email),
            },
        )
        return user

    def _request_email_change(
        self, caller: Caller, user: User, new_address: str, now: datetime
    ) -> None:
        settings = self.context.settings
        tokens = self.context.tokens
        tokens.check_rate(
            user,
            [TokenPurpose.EMAIL_CHANGE],
            settings.token_emails_per_day,
            now,
            "address changes",
        )
        issued = tokens.issue(
            purpose=TokenPurpose.EMAIL_CHANGE,
            subject_id=user.id,
            user=user,
            email=new_address,
            ttl_seconds=settings.email_token_ttl_seconds,
            now=now,
            on_request=True,
        )
        notice = EmailChangeNotice(
            token=issued.token,
            name=user.name,
            expires_at=issued.row.expires_at,
            user_id=user.id,
            link_base=settings.token_link_base,
        )
        queue_token_notice(
            self.session,
            self.context.notices,
            purpose="email_change",
            recipient=new_address,
            notice=notice,
            now=now,
        )
        self.audit.record(
            now=now,
            action="user.email_change_requested",
            actor=caller.name,
            mykad=user.mykad,
            target_id=user.id,
            details={"requested": mask_email(new_address)},
        )

    def _resend_open_verification(self, user: User, now: datetime) -> None:
        """An application waiting for its address verification gets a token at the new
        address (the one sent to the old address has just stopped working)."""
        application = self.session.scalar(
            select(RoamingApplication).where(
                RoamingApplication.user_id == user.id,
                RoamingApplication.status == ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
            )
        )
        if application is None or user.email is None:
            return
        send_application_verification(self.context, user, application, now)
