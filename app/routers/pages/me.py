"""Self-service for a person under /me/: sign in with MyKad + OTP + PIN (the signing check's
rules), see their signatures and pending requests, decline one, sign out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.errors import (
    AuthorizationFailed,
    CredentialLocked,
    DomainError,
    NotFound,
    RateLimited,
)
from app.models import WebRealm
from app.routers.pages.web import (
    csrf_ok,
    csrf_refused,
    in_unit,
    is_row_id,
    read_form,
    render,
    runtime_of,
)
from app.routers.pages.web import set_cookie as set_page_cookie
from app.services.web.sessions import SignedIn
from app.units import Services
from app.validation import normalise_mykad

router = APIRouter(prefix="/me", include_in_schema=False)

SESSION_COOKIE = "rs_me"
SIGN_IN_COOKIE = "rs_me_signin"  # the pending sign-in's request id, for its code page


def enabled(request: Request) -> bool:
    return runtime_of(request).settings.self_service


def not_found(request: Request) -> HTMLResponse:
    return render(request, "message.html", {"title": "not_found"}, 404)


async def signed_in(request: Request) -> SignedIn | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    now = runtime_of(request).clock.now()
    return await in_unit(
        request, lambda services: services.web_sessions.resolve(token, WebRealm.SELF_SERVICE, now)
    )


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    if not enabled(request):
        return not_found(request)
    who = await signed_in(request)
    if who is None:
        return redirect("/me/sign-in")
    now = runtime_of(request).clock.now()

    def overview(services: Services) -> dict[str, Any]:
        mine = services.self_service
        return {
            "signatures": mine.recent_signatures(who.user),
            "pending": mine.pending_requests(who.user, now),
        }

    return render(
        request,
        "me/home.html",
        {"title": "me.title", "who": who.user, **(await in_unit(request, overview))},
    )


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> HTMLResponse:
    if not enabled(request):
        return not_found(request)
    return render(request, "me/sign_in.html", {"title": "signin.title", "errors": {}})


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    if not enabled(request):
        return not_found(request)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return csrf_refused(request)
    given = form.get("mykad", "")
    try:
        mykad = normalise_mykad(given)
    except ValueError:
        return _sign_in_again(request, given, {"mykad": "signin.mykad_invalid"})
    now = runtime_of(request).clock.now()
    try:
        started = await in_unit(request, lambda services: services.sign_in.begin(mykad, now))
    except RateLimited:
        return _sign_in_again(request, given, {"mykad": "signin.rate_limited"})
    except DomainError:
        # An unknown MyKad and one without a usable credential look the same.
        return _sign_in_again(request, given, {"mykad": "signin.no_credential"})
    response = redirect("/me/sign-in/code")
    set_page_cookie(response, SIGN_IN_COOKIE, started.id, max_age=600)
    return response


def _sign_in_again(request: Request, mykad: str, errors: dict[str, str]) -> HTMLResponse:
    return render(
        request, "me/sign_in.html", {"title": "signin.title", "errors": errors, "mykad": mykad}, 422
    )


@router.get("/sign-in/code", response_class=HTMLResponse)
async def code_form(request: Request) -> Response:
    if not enabled(request):
        return not_found(request)
    request_id = request.cookies.get(SIGN_IN_COOKIE, "")
    if not is_row_id(request_id):
        return redirect("/me/sign-in")
    now = runtime_of(request).clock.now()
    try:
        pending = await in_unit(request, lambda s: s.sign_in.pending(request_id, now))
    except NotFound:
        return redirect("/me/sign-in")
    return _code_page(request, {}, pending.destination, pending.expires_at)


def _code_page(
    request: Request,
    errors: dict[str, str],
    destination: str | None = None,
    expires_at: datetime | None = None,
    problem: str | None = None,
    status: int = 200,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "me/code.html",
        {
            "title": "signin.title",
            "errors": errors,
            "destination": destination,
            "problem": problem,
            "values": values or {},
        },
        status,
    )


@router.post("/sign-in/code", response_class=HTMLResponse)
async def check_code(request: Request) -> Response:
    if not enabled(request):
        return not_found(request)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return csrf_refused(request)
    request_id = request.cookies.get(SIGN_IN_COOKIE, "")
    if not is_row_id(request_id):
        return redirect("/me/sign-in")
    otp, pin = form.get("otp", "").strip(), form.get("pin", "")
    errors = code_errors(otp, pin)
    if errors:
        return _code_page(request, errors, status=422)
    now = runtime_of(request).clock.now()
    try:
        token, _user = await in_unit(
            request,
            lambda s: s.sign_in.finish(request_id, otp, pin, WebRealm.SELF_SERVICE, now),
        )
    except DomainError as refused:
        return _code_refused(request, refused)
    response = redirect("/me/")
    set_page_cookie(response, SESSION_COOKIE, token)
    response.delete_cookie(SIGN_IN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def code_errors(otp: str, pin: str) -> dict[str, str]:
    """The code form's own checks, before anything is asked of the database (the console's
    sign-in shares them)."""
    errors = {}
    # ASCII digits: str.isdigit() also takes "١٢٣" or "²", which no OTP or PIN is made of.
    if not (len(otp) == 6 and otp.isascii() and otp.isdigit()):
        errors["otp"] = "signin.otp_invalid"
    if not (6 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
        errors["pin"] = "signin.pin_invalid"
    return errors


@dataclass(frozen=True)
class CodeRefusal:
    """How a code page shows a refused OTP + PIN: next to the field when one can try again,
    else why not (the console's sign-in shows it the same way)."""

    errors: dict[str, str]
    problem: str | None
    status: int
    values: dict[str, str]


def code_refusal(refused: DomainError) -> CodeRefusal:
    if isinstance(refused, AuthorizationFailed):
        remaining = str(refused.extra.get("attempts_remaining", 0))
        return CodeRefusal({"otp": "signin.wrong"}, None, 403, {"remaining": remaining})
    if isinstance(refused, CredentialLocked):
        return CodeRefusal({}, "signin.locked", 423, {})
    if isinstance(refused, RateLimited):
        return CodeRefusal({}, "signin.rate_limited", 429, {})
    # Locked, expired or used request, a malformed check: a new code is needed.
    return CodeRefusal({}, "signin.start_again", 409, {})


def _code_refused(request: Request, refused: DomainError) -> HTMLResponse:
    shown = code_refusal(refused)
    return _code_page(
        request, shown.errors, problem=shown.problem, status=shown.status, values=shown.values
    )


@router.post("/requests/{request_id}/decline", response_class=HTMLResponse)
async def decline(request: Request, request_id: str) -> Response:
    if not enabled(request):
        return not_found(request)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return csrf_refused(request)
    who = await signed_in(request)
    if who is None:
        return redirect("/me/sign-in")
    if not is_row_id(request_id):
        return not_found(request)
    now = runtime_of(request).clock.now()
    try:
        await in_unit(request, lambda s: s.self_service.decline(who.user, request_id, now))
    except NotFound:
        return not_found(request)
    return redirect("/me/")


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out(request: Request) -> Response:
    if not enabled(request):
        return not_found(request)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return csrf_refused(request)
    token = request.cookies.get(SESSION_COOKIE)
    now = runtime_of(request).clock.now()
    await in_unit(request, lambda s: s.web_sessions.end(token, now))
    response = redirect("/me/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
