"""Roaming applications: address verification, resending the notification, approval."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.deps import ClockDep, JdnAdminDep, PeopleReaderDep
from app.errors import (
    Conflict,
    Forbidden,
    NoEmailAddress,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenConsumed,
    TokenExpired,
    Unauthenticated,
)
from app.models import RoamingApplication
from app.routers.lifecycle_deps import (
    AdministratorDep,
    ApplicationsDep,
    PortalDep,
)
from app.schemas.lifecycle import ApplicationOut, ApprovalRequest, TokenSentOut
from app.schemas.problem import BODY_PROBLEMS, problem_responses
from app.schemas.users import TokenConfirmation
from app.services.lifecycle.applications import ApplicationService
from app.services.mail.texts.common import mask_email

router = APIRouter(prefix="/v1/roaming-applications", tags=["roaming lifecycle"])


@router.get(
    "/{application_id}",
    response_model=ApplicationOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def get_application(
    application_id: str, caller: PeopleReaderDep, applications: ApplicationsDep
) -> ApplicationOut:
    """An application and where it stands (an agency administrator: their agency's only)."""
    return application_out(applications, applications.get_for(caller, application_id))


@router.post(
    "/{application_id}/email-verification",
    response_model=ApplicationOut,
    responses=problem_responses(
        *BODY_PROBLEMS, Unauthenticated, Forbidden, NotFound, TokenConsumed, TokenExpired, Conflict
    ),
)
def verify_email(
    application_id: str,
    body: TokenConfirmation,
    caller: PortalDep,
    applications: ApplicationsDep,
    clock: ClockDep,
) -> ApplicationOut:
    """Verify the person's address with the token e-mailed to it: the application moves to
    `email_verified`. A wrong token is `validation_error`, an expired one `otp_expired`, a used
    one or one replaced by a resend `otp_consumed`; none changes anything."""
    application = applications.verify_email(caller, application_id, body.token, clock.now())
    return application_out(applications, application)


@router.post(
    "/{application_id}/notifications",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TokenSentOut,
    responses=problem_responses(
        Unauthenticated, Forbidden, NotFound, Conflict, NoEmailAddress, RateLimited
    ),
)
def resend_notification(
    application_id: str,
    caller: AdministratorDep,
    applications: ApplicationsDep,
    clock: ClockDep,
) -> TokenSentOut:
    """Send the pending step's e-mail again, with a new token (the previous one stops working):
    the address verification, or, once approved, the PIN setup. For JDN and the agency
    administrator of the person's agency; at most 5 a day per person (`rate_limited`)."""
    sent = applications.resend(caller, application_id, clock.now())
    return TokenSentOut(
        purpose=sent.purpose.value,
        destination=sent.destination,
        expires_at=sent.expires_at,
    )


@router.post(
    "/{application_id}/approval",
    response_model=ApplicationOut,
    responses=problem_responses(
        *BODY_PROBLEMS,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        NoEmailAddress,
        ServiceUnavailable,
    ),
)
def approve(
    application_id: str,
    caller: JdnAdminDep,
    applications: ApplicationsDep,
    clock: ClockDep,
    body: ApprovalRequest | None = None,
) -> ApplicationOut:
    """Approve a verified application (JDN): the CA issues the roaming certificate, and the
    person is e-mailed the token to set its PIN. The credential (`credential_id`) signs once
    the PIN is set. Refused (`conflict`) before the address is verified."""
    key_algorithm = body.key_algorithm if body else None
    application = applications.approve(caller, application_id, key_algorithm, clock.now())
    return application_out(applications, application)


def application_out(
    applications: ApplicationService, application: RoamingApplication
) -> ApplicationOut:
    user = applications.holder(application)
    return ApplicationOut(
        id=application.id,
        mykad=user.mykad,
        status=application.status,
        origin=application.origin,
        created_at=application.created_at,
        email_verified_at=application.email_verified_at,
        approved_at=application.approved_at,
        credential_id=application.credential_id,
        destination=mask_email(user.email) if user.email else None,
    )
