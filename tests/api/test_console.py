"""The console's sign-in and its scoping, over ASGI on the test database: administrators only,
a non-administrator answered as one (no code sent), CSRF on every form, sign-out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from app.models import OutboxMessage
from app.runtime import Runtime
from tests.api.console_steps import begin_sign_in, console_browser, grant, post_form, sign_in
from tests.factories import Factory


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with console_browser(runtime) as client:
        yield client


def outbox_size(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


async def test_an_administrator_signs_in_and_out(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    admin = factory.person(name="Pentadbir JDN")
    grant(factory, admin, "jdn_admin")
    assert (await web.get("/console/")).headers["location"] == "/console/sign-in"
    await sign_in(web, runtime, admin)
    home = await web.get("/console/")
    assert home.status_code == 200 and "Pentadbir JDN" in home.text
    cookie = web.cookies["rs_console"]
    out = await post_form(web, "/console/sign-out", {}, from_page="/console/")
    assert out.status_code == 303
    web.cookies.set("rs_console", cookie, domain="roamsign.test")
    assert (await web.get("/console/")).headers["location"] == "/console/sign-in"


async def test_someone_who_is_not_an_administrator_is_answered_as_one(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    person = factory.person()
    before = outbox_size(runtime)
    started = await begin_sign_in(web, person.mykad)
    # The code page, as for an administrator; but no code went out.
    assert started.status_code == 303
    assert outbox_size(runtime) == before
    page = await web.get("/console/sign-in/code")
    assert page.status_code == 200 and "a***@jdn.gov.my" in page.text
    for remaining in ("2", "1"):
        wrong = await post_form(web, "/console/sign-in/code", {"otp": "123456", "pin": person.pin})
        assert wrong.status_code == 403 and f"Baki cubaan: {remaining}." in wrong.text
    last = await post_form(web, "/console/sign-in/code", {"otp": "123456", "pin": person.pin})
    assert last.status_code == 409
    assert "rs_console" not in web.cookies


async def test_unknown_and_credential_less_people_are_refused_as_on_me(
    web: httpx.AsyncClient, factory: Factory
) -> None:
    nobody = await begin_sign_in(web, "850101145555")
    token_user = factory.person(roaming=False)
    grant(factory, token_user, "jdn_admin")
    no_credential = await begin_sign_in(web, token_user.mykad)
    assert nobody.status_code == no_credential.status_code == 422
    assert 'id="e-mykad"' in nobody.text and 'id="e-mykad"' in no_credential.text


async def test_a_form_without_its_csrf_token_is_refused(
    web: httpx.AsyncClient, factory: Factory
) -> None:
    person = factory.person()
    await web.get("/console/sign-in")
    refused = await web.post("/console/sign-in", data={"mykad": person.mykad})
    assert refused.status_code == 403
    forged = await web.post("/console/sign-in", data={"mykad": person.mykad, "csrf": "x" * 43})
    assert forged.status_code == 403
