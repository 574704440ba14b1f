"""The pages give times in the deployment's zone (ROAMSIGN_TIMEZONE), as the e-mails do: not
the default zone whatever the setting says."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.runtime import Runtime
from app.settings import Settings
from tests.api.console_steps import console_browser
from tests.api.test_me_account import sign_in
from tests.factories import Factory


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"timezone": "Europe/London"})


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with console_browser(runtime) as client:
        yield client


async def test_a_persons_certificate_dates_are_in_the_configured_zone(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    person = factory.person()
    await sign_in(web, runtime, person)
    page = await web.get("/me/credentials")
    assert page.status_code == 200
    assert "Europe/London)" in page.text
    assert "Asia/Kuala_Lumpur" not in page.text
