"""The console's audit trail and dashboard pages over ASGI: JDN sees the trail, filters it
(problems next to the field), verifies the chain on request; an agency administrator is refused
the trail as the API refuses it and sees their agency's hour without the e-mail backlog."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.runtime import Runtime
from tests.api.console_steps import console_browser, grant, post_form, sign_in
from tests.factories import Factory


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with console_browser(runtime) as client:
        yield client


async def test_jdn_filters_the_trail_and_verifies_the_chain(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    admin = factory.person(name="Pentadbir JDN", agency="JDN")
    grant(factory, admin, "jdn_admin")
    await sign_in(web, runtime, admin)

    page = await web.get("/console/audit", params={"action": "web.signed_in"})
    assert page.status_code == 200
    assert "web.signed_in" in page.text and "********" + admin.mykad[-4:] in page.text
    assert 'href="/console/audit"' in page.text  # in the navigation

    bad = await web.get("/console/audit", params={"mykad": "12", "until": "2026-02-30T10:00"})
    assert bad.status_code == 422
    assert 'id="e-mykad"' in bad.text and 'id="e-until"' in bad.text
    backwards = await web.get(
        "/console/audit", params={"since": "2026-11-27T10:00", "until": "2026-11-27T09:00"}
    )
    assert backwards.status_code == 422 and "mesti selepas" in backwards.text

    refused = await web.post("/console/audit/verification", data={})
    assert refused.status_code == 403
    verified = await post_form(web, "/console/audit/verification", {}, from_page="/console/audit")
    assert verified.status_code == 200 and "Rantaian utuh" in verified.text
    trail = await web.get("/console/audit", params={"action": "audit.verified"})
    assert f"console:{admin.user_id}" in trail.text


async def test_the_dashboard_for_jdn_and_for_an_agency(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    jdn = factory.person(name="Pentadbir JDN", agency="JDN")
    grant(factory, jdn, "jdn_admin")
    await sign_in(web, runtime, jdn)
    page = await web.get("/console/dashboard")
    assert page.status_code == 200
    assert "<svg" in page.text and "Baris gilir e-mel" in page.text
    assert "style=" not in page.text  # the CSP has no unsafe-inline

    agency = factory.person(name="Pentadbir KKM", agency="KKM")
    grant(factory, agency, "agency_admin", "KKM")
    async with console_browser(runtime) as other:
        await sign_in(other, runtime, agency)
        mine = await other.get("/console/dashboard")
        assert mine.status_code == 200
        assert "agensi KKM sahaja" in mine.text and "Baris gilir e-mel" not in mine.text
        assert 'href="/console/audit"' not in mine.text
        assert (await other.get("/console/audit")).status_code == 403
