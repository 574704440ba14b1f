"""What every page shares: the language, the CSRF cookie, rendering, and a use case run in
its own unit of work (so a refusal keeps the API's commit-or-roll-back rules)."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from app.db import unit_of_work
from app.routers.pages.i18n import DEFAULT_LANGUAGE, LANGUAGES, translate
from app.routers.pages.templating import templates
from app.runtime import Runtime
from app.services.mail.texts.common import timestamp
from app.units import Services

T = TypeVar("T")

LANGUAGE_COOKIE = "rs_lang"
CSRF_COOKIE = "rs_csrf"
CSRF_FIELD = "csrf"
# A form is small; a bulk CSV upload is bigger (app.middleware lets page posts through).
MAX_FORM_FIELDS = 50
# Row ids (app.models.base.new_id): anything else in a path or cookie is nobody's, and never
# reaches the database (PostgreSQL refuses a NUL in a string: that would be a 500).
_ROW_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def is_row_id(*values: str) -> bool:
    return all(_ROW_ID.fullmatch(value) for value in values)


def language_of(request: Request) -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE, DEFAULT_LANGUAGE)
    return chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """Every cookie of the pages: Secure, HttpOnly, SameSite=Strict (never sent from another
    site's page, so a forged cross-site form arrives without it)."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (double-submit: the cookie, and the same value in each form)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 64:
        return existing
    token: str | None = request.scope.setdefault("state", {}).get("new_csrf")
    if token is None:
        token = secrets.token_urlsafe(32)
        request.scope["state"]["new_csrf"] = token
    return token


async def read_form(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (the first value of each); nothing else is a form here."""
    body = await request.body()
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def csrf_ok(request: Request, form: Mapping[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    language = language_of(request)

    def t(key: str, **values: str) -> str:
        return translate(language, key, **values)

    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": t,
            "lang": language,
            "csrf": csrf_token(request),
            # The deployment's zone (ROAMSIGN_TIMEZONE), as in the e-mails.
            "local_time": partial(timestamp, zone=runtime_of(request).notices.zone),
            **(context or {}),
        },
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )
    new_csrf = request.scope.get("state", {}).get("new_csrf")
    if new_csrf:
        set_cookie(response, CSRF_COOKIE, new_csrf)
    return response


def csrf_refused(request: Request) -> HTMLResponse:
    return render(request, "message.html", {"title": "refused", "problem": "csrf.refused"}, 403)


async def in_unit(request: Request, work: Callable[[Services], T]) -> T:
    """Run one use case in its own unit of work on a worker thread: committed if it returns,
    rolled back if it raises (its `keep_changes` kept), as the API's routes run theirs."""
    return await in_runtime_unit(runtime_of(request), work)


async def in_runtime_unit(runtime: Runtime, work: Callable[[Services], T]) -> T:
    """`in_unit` for work that outlives its request (a console job's batches)."""

    def run() -> T:
        with unit_of_work(runtime.sessions) as session:
            return work(Services(runtime, session))

    async with runtime.database_slots():
        return await run_in_threadpool(run)
