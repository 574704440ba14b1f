"""The console's applications: those waiting for the address verification, JDN's approval or
the PIN setup; approve (JDN) and resend the pending step's e-mail (JDN, the agency's
administrator), through the API's own use cases."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.errors import DomainError, NotFound, RateLimited
from app.routers.pages.console_base import (
    admin_form,
    current_admin,
    jdn_only,
    not_found,
    redirect,
    render_console,
    to_sign_in,
)
from app.routers.pages.web import in_unit, is_row_id, runtime_of
from app.services.web.console import ConsoleAdmin
from app.services.web.console_applications import Waiting

router = APIRouter()

# ?done=... after a step (post, redirect, get): the notice shown.
_DONE = {"approved": "console.applications.approved", "resent": "console.applications.resent"}


@router.get("/applications", response_class=HTMLResponse)
async def applications(request: Request) -> Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    done = _DONE.get(request.query_params.get("done", ""))
    return await _list(request, admin, done=done)


async def _list(
    request: Request,
    admin: ConsoleAdmin,
    *,
    done: str | None = None,
    detail: str | None = None,
    problem: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    given = request.query_params.get("waiting", "")
    only = Waiting(given) if given in {waiting.value for waiting in Waiting} else None
    page = await in_unit(request, lambda s: s.console_applications.waiting(admin.caller, only))
    context = {
        "title": "console.applications.title",
        "page": page,
        "only": only.value if only else "",
        "filters": [waiting.value for waiting in Waiting],
        "done": done,
        "detail": detail,
        "problem": problem,
    }
    return render_console(request, admin, "console/applications.html", context, status)


@router.post("/applications/{application_id}/approval", response_class=HTMLResponse)
async def approve(request: Request, application_id: str) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    admin, _form = posted
    if not is_row_id(application_id):
        return not_found(request, admin)
    if not admin.is_jdn:
        return jdn_only(request, admin)
    now = runtime_of(request).clock.now()
    try:
        await in_unit(
            request, lambda s: s.applications.approve(admin.caller, application_id, None, now)
        )
    except NotFound:
        return not_found(request, admin)
    except DomainError as refused:
        return await _list(request, admin, detail=refused.detail, status=refused.status)
    return redirect("/console/applications?done=approved")


@router.post("/applications/{application_id}/notification", response_class=HTMLResponse)
async def resend(request: Request, application_id: str) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    admin, _form = posted
    if not is_row_id(application_id):
        return not_found(request, admin)
    now = runtime_of(request).clock.now()
    try:
        await in_unit(request, lambda s: s.applications.resend(admin.caller, application_id, now))
    except NotFound:
        return not_found(request, admin)
    except RateLimited:
        return await _list(request, admin, problem="console.applications.too_many", status=429)
    except DomainError as refused:
        return await _list(request, admin, detail=refused.detail, status=refused.status)
    return redirect("/console/applications?done=resent")
