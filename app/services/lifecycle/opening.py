"""Opening a roaming application: its row, the e-mail that verifies the person's address, and
the event that records it.

One place for what every path that opens or restarts the verification does: a single opening
(`ApplicationService.open`), bulk enrolment, a resend, and an address change while the
verification is pending.
"""

from __future__ import annotations

from datetime import datetime

from app.models import ApplicationStatus, RoamingApplication, TokenPurpose, User
from app.models.base import new_id
from app.services.audit.log import AuditLog
from app.services.lifecycle.context import LifecycleContext
from app.services.lifecycle.tokens import IssuedToken
from app.services.mail.notices import queue_token_notice
from app.services.mail.texts.tokens import ApplicationVerificationNotice


def new_application_row(user: User, origin: str, actor: str, now: datetime) -> RoamingApplication:
    return RoamingApplication(
        id=new_id(),
        user_id=user.id,
        status=ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
        origin=origin,
        opened_by=actor,
        created_at=now,
    )


def record_opened(
    audit: AuditLog, actor: str, mykad: str, application_id: str, origin: str, now: datetime
) -> None:
    audit.record(
        now=now,
        action="application.opened",
        actor=actor,
        mykad=mykad,
        target_id=application_id,
        details={"origin": origin},
    )


def send_application_verification(
    context: LifecycleContext,
    user: User,
    application: RoamingApplication,
    now: datetime,
    *,
    on_request: bool = False,
) -> IssuedToken:
    """E-mail the token that verifies the person's registered address for this application."""
    issued = issue_application_token(context, user, application, now, on_request=on_request)
    queue_verification(
        context,
        issued.row.email,
        verification_notice(user, application.id, issued, context.settings.token_link_base),
        now,
    )
    return issued


def issue_application_token(
    context: LifecycleContext,
    user: User,
    application: RoamingApplication,
    now: datetime,
    *,
    on_request: bool = False,
    new_application: bool = False,
) -> IssuedToken:
    assert user.email is not None
    return context.tokens.issue(
        purpose=TokenPurpose.APPLICATION_EMAIL,
        subject_id=application.id,
        user=user,
        email=user.email,
        ttl_seconds=context.settings.email_token_ttl_seconds,
        now=now,
        on_request=on_request,
        new_subject=new_application,
    )


def verification_notice(
    user: User, application_id: str, issued: IssuedToken, link_base: str | None
) -> ApplicationVerificationNotice:
    return ApplicationVerificationNotice(
        token=issued.token,
        name=user.name,
        expires_at=issued.row.expires_at,
        application_id=application_id,
        link_base=link_base,
    )


def queue_verification(
    context: LifecycleContext,
    recipient: str | None,
    notice: ApplicationVerificationNotice,
    now: datetime,
) -> None:
    queue_token_notice(
        context.session,
        context.notices,
        purpose="application_email",
        recipient=recipient,
        notice=notice,
        now=now,
    )
