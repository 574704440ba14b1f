"""The pages an e-mailed token links to (`/me/verify-address/...`, `/me/set-pin/...`,
`/me/reset-pin/...`, `/me/confirm-email/...`).

The token travels in the link's fragment, which a browser sends to no server and in no
Referer: the page's script (static/pages/token.js) puts it in the form, and the form posts
it. It works once; the page says plainly when it has expired or was used."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.errors import (
    Conflict,
    CredentialNotActive,
    DomainError,
    NotFound,
    RateLimited,
    TokenConsumed,
    TokenExpired,
    TokenNotValid,
    ValidationFailed,
)
from app.models import Role, User
from app.routers.pages.web import (
    csrf_ok,
    csrf_refused,
    in_unit,
    is_row_id,
    read_form,
    render,
    runtime_of,
)
from app.services.clients import Caller
from app.units import Services
from app.validation import check_pin

router = APIRouter(prefix="/me", include_in_schema=False)

# Who acts when a person follows an e-mailed link: the audit trail's actor.
SELF_SERVICE = Caller(id="self-service", name="self-service", role=Role.PORTAL, agency=None)

# page name -> (title, lead, submit, done, asks for a PIN)
_PAGES: dict[str, tuple[str, str, str, str, bool]] = {
    "verify-address": (
        "verify_address.title",
        "verify_address.lead",
        "verify_address.submit",
        "verify_address.done",
        False,
    ),
    "set-pin": ("set_pin.title", "set_pin.lead", "set_pin.submit", "set_pin.done", True),
    "reset-pin": ("reset_pin.title", "set_pin.lead", "set_pin.submit", "set_pin.done", True),
    "confirm-email": (
        "confirm_email.title",
        "confirm_email.lead",
        "confirm_email.submit",
        "confirm_email.done",
        False,
    ),
}


def _enabled(request: Request) -> bool:
    return runtime_of(request).settings.self_service


@router.get("/{page}/{subject_id}", response_class=HTMLResponse)
async def token_page(request: Request, page: str, subject_id: str) -> HTMLResponse:
    if page not in _PAGES or not _enabled(request):
        return render(request, "message.html", {"title": "not_found"}, 404)
    return _form(request, page, subject_id)


@router.post("/{page}/{subject_id}", response_class=HTMLResponse)
async def use_token(request: Request, page: str, subject_id: str) -> HTMLResponse:
    if page not in _PAGES or not _enabled(request):
        return render(request, "message.html", {"title": "not_found"}, 404)
    form = await read_form(request)
    token, pin = form.get("token", "").strip(), form.get("pin", "")
    refused = _refuse_form(request, page, subject_id, form, token)
    if refused is not None:
        return refused
    if not is_row_id(subject_id):  # nobody's: never sent to the database
        return _refused(request, page, subject_id, NotFound("no such subject"))
    clock = runtime_of(request).clock
    try:
        await in_unit(request, _use_case(page, subject_id, token, pin, clock.now))
    except DomainError as error:
        return _refused(request, page, subject_id, error)
    return render(request, "message.html", {"title": _PAGES[page][0], "done": _PAGES[page][3]})


def _refuse_form(
    request: Request, page: str, subject_id: str, form: dict[str, str], token: str
) -> HTMLResponse | None:
    """The answer to a form that must not reach the use case, or None."""
    if not csrf_ok(request, form):
        return csrf_refused(request)
    if not token or len(token) > 100:
        return _form(request, page, subject_id, problem="token.missing", status=422)
    if _PAGES[page][4]:
        errors = _pin_errors(form.get("pin", ""), form.get("pin_again", ""))
        if errors:
            return _form(request, page, subject_id, errors=errors, status=422)
    return None


def _refused(request: Request, page: str, subject_id: str, error: DomainError) -> HTMLResponse:
    if isinstance(error, TokenExpired | TokenConsumed | TokenNotValid | NotFound):
        key = {TokenExpired: "token.expired", TokenConsumed: "token.used"}.get(
            type(error), "token.not_valid"
        )
        return render(request, "message.html", {"title": _PAGES[page][0], "problem": key}, 409)
    if isinstance(error, ValidationFailed):
        # The service's own PIN rule (the same PIN again): next to the PIN field.
        return _form(request, page, subject_id, errors={"pin": "pin.same"}, status=422)
    if isinstance(error, Conflict | CredentialNotActive | RateLimited):
        return _form(request, page, subject_id, detail=error.detail, status=409)
    return _form(request, page, subject_id, problem="error.busy", status=503)


def _use_case(
    page: str, subject_id: str, token: str, pin: str, now: Callable[[], Any]
) -> Callable[[Services], object]:
    def verify_address(services: Services) -> object:
        return services.applications.verify_email(SELF_SERVICE, subject_id, token, now())

    def set_pin(services: Services) -> object:
        return services.pins.set_with_token(SELF_SERVICE, subject_id, pin, token, now())

    def confirm_email(services: Services) -> object:
        user = services.session.get(User, subject_id)
        if user is None:
            raise NotFound("no such person")
        return services.contacts.confirm_email(SELF_SERVICE, user.mykad, token, now())

    return {
        "verify-address": verify_address,
        "set-pin": set_pin,
        "reset-pin": set_pin,
        "confirm-email": confirm_email,
    }[page]


def _pin_errors(pin: str, again: str) -> dict[str, str]:
    try:
        check_pin(pin)
    except ValueError:
        return {"pin": "pin.invalid"}
    if not hmac.compare_digest(pin.encode(), again.encode()):
        return {"pin_again": "pin.mismatch"}
    return {}


def _form(
    request: Request,
    page: str,
    subject_id: str,
    *,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    detail: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    title, lead, submit, _done, asks_pin = _PAGES[page]
    return render(
        request,
        "token.html",
        {
            "title": title,
            "lead": lead,
            "submit": submit,
            "asks_pin": asks_pin,
            "action": f"/me/{page}/{subject_id}",
            "errors": errors or {},
            "problem": problem,
            "detail": detail,
        },
        status,
    )
