"""The administrators' console under /console/: sign-in (MyKad, then OTP + PIN, for people
holding a console role), the home page, sign-out; the pages themselves are the
`console_*.py` modules listed in `PAGES` (see app/routers/pages/console_base.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.errors import DomainError, NotFound, RateLimited
from app.routers.pages import (
    console_applications,
    console_audit,
    console_dashboard,
    console_enrolments,
    console_people,
)
from app.routers.pages.console_base import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    checked_form,
    current_admin,
    redirect,
    render_console,
    to_sign_in,
)
from app.routers.pages.me import code_errors, code_refusal
from app.routers.pages.web import csrf_refused, in_unit, is_row_id, runtime_of
from app.routers.pages.web import set_cookie as set_page_cookie
from app.validation import normalise_mykad

router = APIRouter(prefix="/console", include_in_schema=False)

# The console's pages: each module's router is mounted here, in this order.
PAGES = (console_applications, console_people, console_enrolments, console_dashboard, console_audit)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    return render_console(request, admin, "console/home.html", {"title": "console.title"})


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> HTMLResponse:
    return _sign_in_page(request, "", {})


def _sign_in_page(
    request: Request, mykad: str, errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    context = {"title": "console.sign_in.title", "errors": errors, "mykad": mykad}
    return render_console(request, None, "console/sign_in.html", context, status)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    form = await checked_form(request)
    if form is None:
        return csrf_refused(request)
    given = form.get("mykad", "")
    try:
        mykad = normalise_mykad(given)
    except ValueError:
        return _sign_in_page(request, given, {"mykad": "signin.mykad_invalid"}, 422)
    now = runtime_of(request).clock.now()
    try:
        started = await in_unit(request, lambda s: s.console_sign_in.begin(mykad, now))
    except RateLimited:
        return _sign_in_page(request, given, {"mykad": "signin.rate_limited"}, 422)
    except DomainError:
        # As on /me/: an unknown MyKad and one without a usable credential look the same.
        return _sign_in_page(request, given, {"mykad": "signin.no_credential"}, 422)
    response = redirect("/console/sign-in/code")
    set_page_cookie(response, SIGN_IN_COOKIE, started.request_id, max_age=600)
    return response


@router.get("/sign-in/code", response_class=HTMLResponse)
async def code_form(request: Request) -> Response:
    request_id = request.cookies.get(SIGN_IN_COOKIE, "")
    if not is_row_id(request_id):
        return to_sign_in()
    now = runtime_of(request).clock.now()
    try:
        pending = await in_unit(request, lambda s: s.sign_in.pending(request_id, now))
    except NotFound:
        return to_sign_in()
    return _code_page(request, {}, destination=pending.destination)


def _code_page(
    request: Request,
    errors: dict[str, str],
    *,
    destination: str | None = None,
    problem: str | None = None,
    status: int = 200,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    context = {
        "title": "console.sign_in.title",
        "errors": errors,
        "destination": destination,
        "problem": problem,
        "values": values or {},
    }
    return render_console(request, None, "console/code.html", context, status)


@router.post("/sign-in/code", response_class=HTMLResponse)
async def check_code(request: Request) -> Response:
    form = await checked_form(request)
    if form is None:
        return csrf_refused(request)
    request_id = request.cookies.get(SIGN_IN_COOKIE, "")
    if not is_row_id(request_id):
        return to_sign_in()
    otp, pin = form.get("otp", "").strip(), form.get("pin", "")
    errors = code_errors(otp, pin)
    if errors:
        return _code_page(request, errors, status=422)
    now = runtime_of(request).clock.now()
    try:
        token, _user = await in_unit(
            request, lambda s: s.console_sign_in.finish(request_id, otp, pin, now)
        )
    except DomainError as refused:
        return _code_refused(request, refused)
    response = redirect("/console/")
    set_page_cookie(response, SESSION_COOKIE, token)
    response.delete_cookie(SIGN_IN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def _code_refused(request: Request, refused: DomainError) -> HTMLResponse:
    shown = code_refusal(refused)
    return _code_page(
        request, shown.errors, problem=shown.problem, status=shown.status, values=shown.values
    )


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out(request: Request) -> Response:
    form = await checked_form(request)
    if form is None:
        return csrf_refused(request)
    admin = await current_admin(request)
    if admin is not None:
        token = request.cookies.get(SESSION_COOKIE)
        now = runtime_of(request).clock.now()
        await in_unit(request, lambda s: s.console_admins.sign_out(admin, token, now))
    response = to_sign_in()
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


for _page in PAGES:
    router.include_router(_page.router)
