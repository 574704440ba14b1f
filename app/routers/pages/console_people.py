"""A person's page in the console: found by MyKad (an agency administrator: their agency's
people only; anyone else is answered as nobody), their media, credentials, devices and
status; unlock, revoke with an RFC 5280 reason, renew (JDN, as the API)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.crypto.keystore import KEY_ALGORITHMS
from app.errors import DomainError, NotFound
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
from app.services.lifecycle.credentials import REVOCATION_REASONS
from app.services.web.console import ConsoleAdmin
from app.units import Services
from app.validation import normalise_mykad

router = APIRouter()

_DONE = {
    "unlocked": "console.person.unlocked",
    "revoked": "console.person.revoked",
    "renewed": "console.person.renewed",
}


@router.get("/people", response_class=HTMLResponse)
async def search_form(request: Request) -> Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    return _search_page(request, admin, "", {})


def _search_page(
    request: Request, admin: ConsoleAdmin, mykad: str, errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    context = {"title": "console.people.title", "errors": errors, "mykad": mykad}
    return render_console(request, admin, "console/people.html", context, status)


@router.post("/people", response_class=HTMLResponse)
async def search(request: Request) -> Response:
    """The MyKad goes in a posted form, never in a URL (no log, no history holds it)."""
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    admin, form = posted
    given = form.get("mykad", "")
    try:
        mykad = normalise_mykad(given)
    except ValueError:
        return _search_page(request, admin, given, {"mykad": "signin.mykad_invalid"}, 422)
    try:
        user = await in_unit(request, lambda s: s.console_people.find(admin.caller, mykad))
    except NotFound:
        return _search_page(request, admin, given, {"mykad": "console.people.unknown"}, 404)
    return redirect(f"/console/people/{user.id}")


@router.get("/people/{user_id}", response_class=HTMLResponse)
async def person(request: Request, user_id: str) -> Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    done = _DONE.get(request.query_params.get("done", ""))
    return await _person_page(request, admin, user_id, done=done)


async def _person_page(
    request: Request,
    admin: ConsoleAdmin,
    user_id: str,
    *,
    done: str | None = None,
    detail: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    if not is_row_id(user_id):
        return not_found(request, admin)
    now = runtime_of(request).clock.now()
    try:
        view = await in_unit(request, lambda s: s.console_people.view(admin.caller, user_id, now))
    except NotFound:
        return not_found(request, admin)
    context = {
        "title": "console.person.title",
        "view": view,
        "done": done,
        "detail": detail,
        "errors": errors or {},
        "reasons": REVOCATION_REASONS,
        "key_algorithms": sorted(KEY_ALGORITHMS),
    }
    return render_console(request, admin, "console/person.html", context, status)


@router.post("/people/{user_id}/credentials/{credential_id}/unlock", response_class=HTMLResponse)
async def unlock(request: Request, user_id: str, credential_id: str) -> Response:
    return await _credential_step(request, user_id, credential_id, "unlock")


@router.post(
    "/people/{user_id}/credentials/{credential_id}/revocation", response_class=HTMLResponse
)
async def revoke(request: Request, user_id: str, credential_id: str) -> Response:
    return await _credential_step(request, user_id, credential_id, "revocation")


@router.post("/people/{user_id}/credentials/{credential_id}/renewal", response_class=HTMLResponse)
async def renew(request: Request, user_id: str, credential_id: str) -> Response:
    return await _credential_step(request, user_id, credential_id, "renewal")


async def _credential_step(
    request: Request, user_id: str, credential_id: str, step: str
) -> Response:
    """Unlock, revoke or renew one of the person's credentials (JDN, as the API)."""
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    admin, form = posted
    stop = _refused_step(request, admin, user_id, credential_id)
    if stop is not None:
        return stop
    errors = _step_errors(step, credential_id, form)
    if errors:
        return await _person_page(request, admin, user_id, errors=errors, status=422)
    now = runtime_of(request).clock.now()
    try:
        await in_unit(request, _step(step, admin, user_id, credential_id, form, now))
    except NotFound:
        return not_found(request, admin)
    except DomainError as refused:
        return await _person_page(
            request, admin, user_id, detail=refused.detail, status=refused.status
        )
    done = {"unlock": "unlocked", "revocation": "revoked", "renewal": "renewed"}[step]
    return redirect(f"/console/people/{user_id}?done={done}")


def _refused_step(
    request: Request, admin: ConsoleAdmin, user_id: str, credential_id: str
) -> HTMLResponse | None:
    if not is_row_id(user_id, credential_id):
        return not_found(request, admin)
    if not admin.is_jdn:
        return jdn_only(request, admin)
    return None


def _step_errors(step: str, credential_id: str, form: dict[str, str]) -> dict[str, str]:
    """Field errors, keyed `<field>-<credential id>` (each credential has its own form)."""
    if step == "revocation" and form.get("reason", "") not in REVOCATION_REASONS:
        return {f"reason-{credential_id}": "console.person.reason_invalid"}
    algorithm = form.get("key_algorithm", "")
    if step == "renewal" and algorithm and algorithm not in KEY_ALGORITHMS:
        return {f"key_algorithm-{credential_id}": "console.person.algorithm_invalid"}
    return {}


def _step(
    step: str,
    admin: ConsoleAdmin,
    user_id: str,
    credential_id: str,
    form: dict[str, str],
    now: datetime,
) -> Callable[[Services], object]:
    caller = admin.caller
    if step == "unlock":
        return lambda s: s.console_people.unlock(caller, user_id, credential_id, now)
    if step == "revocation":
        reason = form["reason"]
        return lambda s: s.console_people.revoke(caller, user_id, credential_id, reason, now)
    algorithm = form.get("key_algorithm") or None
    return lambda s: s.console_people.renew(caller, user_id, credential_id, algorithm, now)
