"""People: registration, contact details, their media and their roaming applications."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status

from app.deps import ClockDep, JdnAdminDep, PeopleReaderDep, PeopleServiceDep
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
from app.models import Medium, User
from app.routers.applications import application_out
from app.routers.credentials import credential_out
from app.routers.lifecycle_deps import (
    ApplicationsDep,
    ContactsDep,
    CredentialsDep,
    MyKadPath,
    PortalDep,
    PortalOrJdnDep,
)
from app.schemas.lifecycle import ApplicationOut, CredentialOut, MediumRecord
from app.schemas.problem import BODY_PROBLEMS, problem_responses, response_links
from app.schemas.users import TokenConfirmation, UserCreate, UserOut, UserUpdate
from app.services.lifecycle.contacts import UNCHANGED, ContactChanges, ContactService

router = APIRouter(prefix="/v1/users", tags=["people"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=problem_responses(*BODY_PROBLEMS, Unauthenticated, Forbidden, Conflict),
)
def create_user(
    body: UserCreate, caller: JdnAdminDep, people: PeopleServiceDep, clock: ClockDep
) -> UserOut:
    """Register a person (JDN). The MyKad and phone are stored normalised."""
    user = people.create(
        mykad=body.mykad,
        name=body.name,
        agency=body.agency,
        email=body.email,
        phone=body.phone,
        now=clock.now(),
        actor=caller.name,
    )
    return UserOut.model_validate(user, from_attributes=True)


@router.get(
    "/{mykad}",
    response_model=UserOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def get_user(
    caller: PeopleReaderDep, mykad: MyKadPath, contacts: ContactsDep, clock: ClockDep
) -> UserOut:
    """A person's record: for the portal, JDN, and the agency administrator of their agency."""
    user = contacts.people.get_for(caller, mykad)
    return user_out(contacts, user, clock.now())


@router.patch(
    "/{mykad}",
    response_model=UserOut,
    responses=problem_responses(
        *BODY_PROBLEMS, Unauthenticated, Forbidden, NotFound, RateLimited, ServiceUnavailable
    ),
)
def update_user(
    caller: PortalOrJdnDep,
    mykad: MyKadPath,
    body: UserUpdate,
    contacts: ContactsDep,
    clock: ClockDep,
) -> UserOut:
    """Change the e-mail address, phone number or agency (only the fields given).

    A new e-mail address does not take effect yet: a token goes to it (`pending_email`), and
    the change applies once it is confirmed (`POST /v1/users/{mykad}/email-verification`).
    A new phone number deactivates the person's active mobile device. An agency transfer
    leaves the credentials as they are: signing goes on as before.
    """
    now = clock.now()
    given = body.model_fields_set
    changes = ContactChanges(
        email=body.email,
        phone=body.phone if "phone" in given else UNCHANGED,
        agency=body.agency,
    )
    return user_out(contacts, contacts.update(caller, mykad, changes, now), now)


@router.post(
    "/{mykad}/email-verification",
    response_model=UserOut,
    responses=problem_responses(
        *BODY_PROBLEMS, Unauthenticated, Forbidden, NotFound, TokenConsumed, TokenExpired
    ),
)
def confirm_email(
    caller: PortalDep,
    mykad: MyKadPath,
    body: TokenConfirmation,
    contacts: ContactsDep,
    clock: ClockDep,
) -> UserOut:
    """Confirm a new e-mail address with the token sent to it: it becomes the registered
    address, the old address is told, and tokens sent to the old address stop working.
    A wrong token is `validation_error`, an expired one `otp_expired`, a used or replaced one
    `otp_consumed`; none changes anything."""
    now = clock.now()
    return user_out(contacts, contacts.confirm_email(caller, mykad, body.token, now), now)


@router.get(
    "/{mykad}/credentials",
    response_model=list[CredentialOut],
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def list_credentials(
    caller: PeopleReaderDep, mykad: MyKadPath, credentials: CredentialsDep, clock: ClockDep
) -> list[CredentialOut]:
    """Every medium the person holds (token, softcert, roaming), with its status as it stands
    now: a token or certificate past its date reads `expired`."""
    now = clock.now()
    return [credential_out(c, now) for c in credentials.of_person(caller, mykad)]


@router.post(
    "/{mykad}/credentials",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialOut,
    responses=problem_responses(*BODY_PROBLEMS, Unauthenticated, Forbidden, NotFound, Conflict),
)
def record_medium(
    caller: JdnAdminDep,
    mykad: MyKadPath,
    body: MediumRecord,
    credentials: CredentialsDep,
    clock: ClockDep,
) -> CredentialOut:
    """Record a token (or softcert) the person holds, with its serial and expiry (JDN). It
    needs no cancellation: it reads `expired` after its date."""
    now = clock.now()
    credential = credentials.record_medium(
        caller,
        mykad,
        medium=Medium(body.medium),
        serial=body.serial,
        not_before=body.not_before,
        not_after=body.expires_at,
        now=now,
    )
    return credential_out(credential, now)


@router.post(
    "/{mykad}/roaming-applications",
    status_code=status.HTTP_201_CREATED,
    response_model=ApplicationOut,
    responses=problem_responses(
        Unauthenticated, Forbidden, NotFound, Conflict, NoEmailAddress, ServiceUnavailable
    ),
    openapi_extra=response_links(
        201,
        "application_id",
        "/id",
        GetApplication="get_application_v1_roaming_applications__application_id__get",
        VerifyEmail="verify_email_v1_roaming_applications__application_id__email_verification_post",
        ResendNotification=(
            "resend_notification_v1_roaming_applications__application_id__notifications_post"
        ),
        Approve="approve_v1_roaming_applications__application_id__approval_post",
    ),
)
def open_application(
    caller: PortalOrJdnDep, mykad: MyKadPath, applications: ApplicationsDep, clock: ClockDep
) -> ApplicationOut:
    """Apply for the roaming medium: the application awaits the verification of the person's
    registered e-mail address, to which a single-use token is sent. One open application per
    person (`conflict`); none for someone already holding a roaming credential."""
    application = applications.open(caller, mykad, clock.now())
    return application_out(applications, application)


def user_out(contacts: ContactService, user: User, now: datetime) -> UserOut:
    out = UserOut.model_validate(user, from_attributes=True)
    out.pending_email = contacts.pending_email(user, now)
    return out
