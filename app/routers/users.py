"""People."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.deps import ClockDep, JdnAdminDep, PeopleReaderDep, PeopleServiceDep
from app.errors import Conflict, Forbidden, NotFound, Unauthenticated
from app.schemas.problem import BODY_PROBLEMS, problem_responses
from app.schemas.users import UserCreate, UserOut
from app.validation import normalise_mykad

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
def get_user(mykad: str, caller: PeopleReaderDep, people: PeopleServiceDep) -> UserOut:
    """A person's record: for the portal, JDN, and the agency administrator of their agency."""
    try:
        normalised = normalise_mykad(mykad)
    except ValueError:
        raise NotFound("no such person") from None
    return UserOut.model_validate(people.get_for(caller, normalised), from_attributes=True)
