"""Driving the console's pages over ASGI: a browser's cookies (https, so the Secure ones are
sent), the CSRF token read from the page, the sign-in's OTP read from the outbox."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from app.db import unit_of_work
from app.main import create_app
from app.models import ConsoleRole
from app.runtime import Runtime
from app.services.audit.log import AuditLog
from app.services.web.console import ConsoleAdministrators
from app.services.web.sessions import WebSessionService
from tests.factories import Factory, Person
from tests.helpers import queued_otp

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def console_browser(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on the app (a test module's fixture yields one)."""
    app = create_app(runtime=runtime, background_workers=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://roamsign.test") as client:
        yield client


def grant(factory: Factory, person: Person, role: str, agency: str | None = None) -> None:
    runtime = factory.runtime
    with unit_of_work(runtime.sessions) as session:
        audit: AuditLog = factory.audit(session)
        admins = ConsoleAdministrators(session, audit, WebSessionService(session, runtime.settings))
        admins.grant(person.mykad, ConsoleRole(role).value, agency, factory.now(), "test")


async def csrf_of(browser: httpx.AsyncClient, path: str) -> str:
    page = await browser.get(path)
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def post_form(
    browser: httpx.AsyncClient, path: str, fields: dict[str, str], *, from_page: str | None = None
) -> httpx.Response:
    """Post a form as its page would: with the page's CSRF token."""
    token = await csrf_of(browser, from_page or path)
    return await browser.post(path, data={"csrf": token, **fields})


async def begin_sign_in(browser: httpx.AsyncClient, mykad: str) -> httpx.Response:
    return await post_form(browser, "/console/sign-in", {"mykad": mykad})


async def sign_in(browser: httpx.AsyncClient, runtime: Runtime, person: Person) -> None:
    started = await begin_sign_in(browser, person.mykad)
    assert started.status_code == 303, started.text
    request_id = browser.cookies["rs_console_signin"]
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, request_id)
    done = await post_form(
        browser,
        "/console/sign-in/code",
        {"otp": otp, "pin": person.pin},
        from_page="/console/sign-in/code",
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/", done.text
