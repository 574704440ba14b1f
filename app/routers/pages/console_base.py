"""What every console page shares: the signed-in administrator, the navigation, rendering,
CSRF-checked forms.

To add a console page: a module `console_<page>.py` with its own `router` (paths under
`/console/...`), each route starting with `admin = await current_admin(request)` (None: return
`to_sign_in()`), its forms read with `admin_form`; then one line in `NAV` below and one in
`PAGES` of `app/routers/pages/console.py`. Templates extend `console/base.html`; words go in
the `console.` block of `app/routers/pages/i18n.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.routers.pages.web import (
    csrf_ok,
    csrf_refused,
    in_unit,
    read_form,
    render,
    runtime_of,
)
from app.services.web.console import ConsoleAdmin

SESSION_COOKIE = "rs_console"
SIGN_IN_COOKIE = "rs_console_signin"  # the pending sign-in's id, for its code page


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # an i18n key
    jdn_only: bool = False


# The console's navigation, in order. A new page adds its line here.
NAV: list[NavItem] = [
    NavItem("/console/", "console.nav.home"),
    NavItem("/console/applications", "console.nav.applications"),
    NavItem("/console/people", "console.nav.people"),
    NavItem("/console/enrolments", "console.nav.enrolments", jdn_only=True),
    NavItem("/console/dashboard", "console.dash.nav"),
    NavItem("/console/audit", "console.audit.nav", jdn_only=True),
]


async def current_admin(request: Request) -> ConsoleAdmin | None:
    """The administrator signed in to this browser (and still holding a role), else None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    now = runtime_of(request).clock.now()
    return await in_unit(request, lambda s: s.console_admins.signed_in(token, now))


def to_sign_in() -> RedirectResponse:
    return redirect("/console/sign-in")


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def render_console(
    request: Request,
    admin: ConsoleAdmin | None,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A console page: the administrator and the navigation their role sees."""
    nav = [item for item in NAV if admin is not None and (admin.is_jdn or not item.jdn_only)]
    return render(
        request,
        template,
        {"admin": admin, "nav": nav, "here": request.url.path, **(context or {})},
        status,
    )


async def checked_form(request: Request) -> dict[str, str] | None:
    """The posted form if its CSRF token is right, else None (answer `csrf_refused`)."""
    form = await read_form(request)
    return form if csrf_ok(request, form) else None


async def admin_form(request: Request) -> tuple[ConsoleAdmin, dict[str, str]] | Response:
    """A console form's post: the administrator and the CSRF-checked fields, or the answer
    (refused, or to the sign-in)."""
    form = await checked_form(request)
    if form is None:
        return csrf_refused(request)
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    return admin, form


def not_found(request: Request, admin: ConsoleAdmin | None) -> HTMLResponse:
    return render_console(request, admin, "console/message.html", {"title": "not_found"}, 404)


def jdn_only(request: Request, admin: ConsoleAdmin) -> HTMLResponse:
    """The answer to an agency administrator at a JDN-only step (the API's 403)."""
    return render_console(
        request,
        admin,
        "console/message.html",
        {"title": "refused", "problem": "console.jdn_only"},
        403,
    )
