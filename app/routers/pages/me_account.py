"""The signed-in person's own record under /me/: their credentials and certificates (download
as PEM or DER), their MyGPKI Mobile device (deactivate it, after a confirmation), their e-mail
address (changed once the new address confirms it, through /me/confirm-email/...).

Scoping is the service's (app.services.web.selfservice): someone else's credential or device
is answered as one that does not exist."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from app.errors import DomainError, NotFound, RateLimited
from app.routers.pages.me import enabled, not_found, redirect, signed_in
from app.routers.pages.web import (
    csrf_ok,
    csrf_refused,
    in_unit,
    is_row_id,
    read_form,
    render,
    runtime_of,
)
from app.schemas.common import Email
from app.services.web.sessions import SignedIn

router = APIRouter(prefix="/me", include_in_schema=False)

PEM_CERTIFICATE = "application/x-pem-file"
DER_CERTIFICATE = "application/pkix-cert"  # RFC 2585
_EMAIL = TypeAdapter(Email)
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


async def _person(request: Request) -> SignedIn | Response:
    """The signed-in person, or the answer to give instead (not found, or sign in first)."""
    if not enabled(request):
        return not_found(request)
    who = await signed_in(request)
    return redirect("/me/sign-in") if who is None else who


async def _person_posting(request: Request) -> tuple[SignedIn, dict[str, str]] | Response:
    """The signed-in person and their form (its CSRF token checked), or the answer instead."""
    if not enabled(request):
        return not_found(request)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return csrf_refused(request)
    who = await _person(request)
    return who if not isinstance(who, SignedIn) else (who, form)


# -- credentials and certificates -----------------------------------------------------------


@router.get("/credentials", response_class=HTMLResponse)
async def credentials(request: Request) -> Response:
    who = await _person(request)
    if not isinstance(who, SignedIn):
        return who
    now = runtime_of(request).clock.now()
    rows = await in_unit(request, lambda s: s.self_service.credentials(who.user, now))
    return render(
        request, "me/credentials.html", {"title": "me2.credentials", "who": who, "rows": rows}
    )


@router.get("/credentials/{credential_id}/certificate.{extension}")
async def certificate(request: Request, credential_id: str, extension: str) -> Response:
    who = await _person(request)
    if not isinstance(who, SignedIn):
        return who
    if extension not in ("pem", "cer") or not is_row_id(credential_id):
        return not_found(request)
    try:
        found = await in_unit(
            request, lambda s: s.self_service.certificate(who.user, credential_id)
        )
    except NotFound:
        return not_found(request)
    name = _FILE_NAME_UNSAFE.sub("", found.stem) + "." + extension
    if extension == "pem":
        content, media_type = found.pem.encode(), PEM_CERTIFICATE
    else:
        content, media_type = found.der, DER_CERTIFICATE
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


# -- the device ------------------------------------------------------------------------------


@router.get("/device", response_class=HTMLResponse)
async def device(request: Request) -> Response:
    who = await _person(request)
    if not isinstance(who, SignedIn):
        return who
    active = await in_unit(request, lambda s: s.self_service.active_device(who.user))
    return render(request, "me/device.html", {"title": "me2.device", "who": who, "device": active})


@router.get("/device/{device_id}/deactivate", response_class=HTMLResponse)
async def confirm_deactivation(request: Request, device_id: str) -> Response:
    who = await _person(request)
    if not isinstance(who, SignedIn):
        return who
    if not is_row_id(device_id):
        return not_found(request)
    try:
        found = await in_unit(
            request, lambda s: s.self_service.own_active_device(who.user, device_id)
        )
    except NotFound:
        return not_found(request)
    return render(
        request, "me/device_confirm.html", {"title": "me2.device", "who": who, "device": found}
    )


@router.post("/device/{device_id}/deactivate", response_class=HTMLResponse)
async def deactivate(request: Request, device_id: str) -> Response:
    posted = await _person_posting(request)
    if not isinstance(posted, tuple):
        return posted
    who, _form = posted
    if not is_row_id(device_id):
        return not_found(request)
    now = runtime_of(request).clock.now()
    try:
        await in_unit(request, lambda s: s.self_service.deactivate_device(who.user, device_id, now))
    except NotFound:
        return not_found(request)
    return render(
        request,
        "me/device.html",
        {"title": "me2.device", "who": who, "device": None, "done": "me2.device_done"},
    )


# -- contact details --------------------------------------------------------------------------


@router.get("/contact", response_class=HTMLResponse)
async def contact(request: Request) -> Response:
    who = await _person(request)
    if not isinstance(who, SignedIn):
        return who
    return await _contact_page(request, who, {})


@router.post("/contact", response_class=HTMLResponse)
async def change_email(request: Request) -> Response:
    posted = await _person_posting(request)
    if not isinstance(posted, tuple):
        return posted
    who, form = posted
    given = form.get("email", "").strip()
    problem = _email_problem(given, who.user.email)
    if problem:
        return await _contact_page(request, who, {"email": problem}, given, 422)
    now = runtime_of(request).clock.now()
    try:
        await in_unit(request, lambda s: s.self_service.request_email_change(who.user, given, now))
    except RateLimited:
        return await _contact_page(request, who, {"email": "me2.email_too_many"}, given, 429)
    except DomainError:
        return await _contact_page(request, who, {"email": "me2.email_refused"}, given, 409)
    return await _contact_page(request, who, {}, done="me2.email_sent")


def _email_problem(given: str, current: str | None) -> str | None:
    try:
        _EMAIL.validate_python(given)
    except ValidationError:
        return "me2.email_invalid"
    if given.lower() == (current or "").lower():
        return "me2.email_same"
    return None


async def _contact_page(
    request: Request,
    who: SignedIn,
    errors: dict[str, str],
    email: str = "",
    status: int = 200,
    done: str | None = None,
) -> HTMLResponse:
    now = runtime_of(request).clock.now()
    pending = await in_unit(request, lambda s: s.self_service.pending_email(who.user, now))
    context: dict[str, Any] = {
        "title": "me2.contact",
        "who": who,
        "pending": pending,
        "errors": errors,
        "email": email,
        "done": done,
    }
    return render(request, "me/contact.html", context, status)
