"""The audit trail, for JDN."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import JdnAdminDep
from app.errors import Forbidden, Unauthenticated, ValidationFailed
from app.routers.lifecycle_deps import AuditTrailDep
from app.schemas.common import Rfc3339
from app.schemas.lifecycle import AuditEventOut, AuditPageOut
from app.schemas.problem import problem_responses
from app.services.audit.trail import MAX_PAGE

router = APIRouter(prefix="/v1/audit-events", tags=["audit"])


@router.get(
    "",
    response_model=AuditPageOut,
    responses=problem_responses(Unauthenticated, Forbidden, ValidationFailed),
)
def list_audit_events(
    caller: JdnAdminDep,
    trail: AuditTrailDep,
    mykad: Annotated[str | None, Query(max_length=14, description="One person's events")] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="e.g. credential.revoked")
    ] = None,
    since: Annotated[Rfc3339 | None, Query(description="RFC 3339, inclusive")] = None,
    after: Annotated[
        int | None, Query(ge=0, description="`next_after` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPageOut:
    """The audit trail in the order it was written, filtered by person, action and time, a
    page at a time. People appear masked (`********5555`); no secret is ever recorded."""
    page = trail.page(mykad=mykad, action=action, since=since, after=after, limit=limit)
    return AuditPageOut(
        events=[AuditEventOut.model_validate(event, from_attributes=True) for event in page.events],
        next_after=page.next_after,
    )
