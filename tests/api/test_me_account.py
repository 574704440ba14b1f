"""The person's own record on /me/ over ASGI: another person's certificate or device is the
404 of an unknown one, downloads carry their content types and a file name, and every form
needs its CSRF token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.runtime import Runtime
from tests.api.console_steps import console_browser, post_form
from tests.factories import Factory, Person
from tests.helpers import queued_otp


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with console_browser(runtime) as client:
        yield client


async def sign_in(web: httpx.AsyncClient, runtime: Runtime, person: Person) -> None:
    started = await post_form(web, "/me/sign-in", {"mykad": person.mykad})
    assert started.status_code == 303, started.text
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, web.cookies["rs_me_signin"])
    done = await post_form(
        web, "/me/sign-in/code", {"otp": otp, "pin": person.pin}, from_page="/me/sign-in/code"
    )
    assert done.status_code == 303 and done.headers["location"] == "/me/", done.text


async def test_a_person_reaches_only_their_own_certificate_and_device(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    me, other = factory.person(), factory.person()
    others_device = factory.mobile_device(other).device_id
    await sign_in(web, runtime, me)

    own = await web.get(f"/me/credentials/{me.credential_id}/certificate.cer")
    assert own.status_code == 200
    assert own.headers["content-type"] == "application/pkix-cert"
    assert own.headers["content-disposition"].startswith('attachment; filename="roamsign-')
    pem = await web.get(f"/me/credentials/{me.credential_id}/certificate.pem")
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert pem.text.startswith("-----BEGIN CERTIFICATE-----")

    unknown = await web.get("/me/credentials/00000000-0000-0000-0000-000000000000/certificate.pem")
    others = await web.get(f"/me/credentials/{other.credential_id}/certificate.pem")
    assert unknown.status_code == others.status_code == 404
    assert others.text == unknown.text
    assert (await web.get(f"/me/credentials/{me.credential_id}/certificate.txt")).status_code == 404

    assert (await web.get(f"/me/device/{others_device}/deactivate")).status_code == 404
    refused = await post_form(
        web, f"/me/device/{others_device}/deactivate", {}, from_page="/me/device"
    )
    assert refused.status_code == 404
    assert (await web.post("/me/contact", data={"email": "x@jdn.gov.my"})).status_code == 403


async def test_the_pages_ask_for_a_sign_in(web: httpx.AsyncClient, factory: Factory) -> None:
    person = factory.person()
    for path in ("/me/credentials", "/me/device", "/me/contact"):
        answer = await web.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/me/sign-in"
    answer = await web.get(f"/me/credentials/{person.credential_id}/certificate.pem")
    assert answer.status_code == 303
