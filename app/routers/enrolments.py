"""Bulk enrolment: moving token users to the roaming medium."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from app.deps import ClockDep, JdnAdminDep
from app.errors import Forbidden, ServiceUnavailable, Unauthenticated
from app.routers.lifecycle_deps import ApplicationsDep
from app.schemas.lifecycle import EnrolmentReport, EnrolmentRequest, EnrolmentResultOut
from app.schemas.problem import BODY_PROBLEMS, problem_responses

router = APIRouter(prefix="/v1/roaming-enrolments", tags=["roaming lifecycle"])


@router.post(
    "",
    response_model=EnrolmentReport,
    responses=problem_responses(*BODY_PROBLEMS, Unauthenticated, Forbidden, ServiceUnavailable),
)
def enrol(
    body: EnrolmentRequest, caller: JdnAdminDep, applications: ApplicationsDep, clock: ClockDep
) -> EnrolmentReport:
    """Open a roaming application for each registered person given (at most 1,000 a call)
    and queue its verification e-mail; nobody registers again. The report says, per MyKad
    in the order given: `enrolled`, `already_enrolled` (an application is open: nothing is
    sent again), `already_roaming`, `unknown_person`, `invalid_mykad` or `no_email`. Safe to
    run again. For larger lists: `python -m app enrol --csv FILE`."""
    results = applications.enrol(caller.name, body.mykads, clock.now())
    return EnrolmentReport(
        counts=dict(Counter(result.outcome.value for result in results)),
        results=[
            EnrolmentResultOut(
                mykad=result.mykad,
                outcome=result.outcome.value,
                application_id=result.application_id,
            )
            for result in results
        ],
    )
