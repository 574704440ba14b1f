"""An e-mailed token opens its page: the token arrives in the URL fragment, works once, and
the page says plainly when it was used."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from app.db import unit_of_work
from app.units import Services
from tests.browser.conftest import Browsing, Site, link_in_mail
from tests.factories import FACTORY_CALLER


def test_a_verification_link_works_once_and_says_so_the_second_time(
    site: Site, browsing: Browsing, page: Page
) -> None:
    person = site.factory.person(roaming=False, email="link.once@jdn.gov.my")
    with unit_of_work(site.sessions) as session:
        Services(site.factory.runtime, session).applications.open(
            FACTORY_CALLER, person.mykad, site.factory.now()
        )
    link = link_in_mail(site, "link.once@jdn.gov.my", "Pengesahan e-mel")
    assert link.startswith("/me/verify-address/") and "#" in link

    page.goto(link)
    expect(page.locator("h1")).to_have_text("Sahkan alamat e-mel")
    assert "#" not in page.url  # the token left the address bar
    page.get_by_role("button", name="Sahkan alamat e-mel").click()
    expect(page.locator(".notice.ok")).to_contain_text("telah disahkan")

    again = browsing.new_page()  # the same link again, from the e-mail
    again.goto(link)
    again.get_by_role("button", name="Sahkan alamat e-mel").click()
    expect(again.locator(".notice.error")).to_contain_text("telah digunakan")
    # The token never reached the server's log (it travels in the fragment and the form).
    token = link.split("#", 1)[1]
    assert token not in site.server.log()
    assert browsing.external == []


def test_a_form_without_its_csrf_token_is_refused(site: Site, page: Page) -> None:
    person = site.factory.person(roaming=False, email="csrf@jdn.gov.my")
    with unit_of_work(site.sessions) as session:
        Services(site.factory.runtime, session).applications.open(
            FACTORY_CALLER, person.mykad, site.factory.now()
        )
    link = link_in_mail(site, "csrf@jdn.gov.my", "Pengesahan e-mel")
    page.goto(link)
    page.locator("input[name=csrf]").evaluate("field => field.value = 'forged'")
    page.get_by_role("button", name="Sahkan alamat e-mel").click()
    expect(page.locator(".notice.error")).to_contain_text("tamat tempoh atau tidak datang")
    # A post from elsewhere, with no cookie at all, is refused just the same.
    answer = page.request.post(
        link.split("#")[0], form={"token": link.split("#")[1]}, headers={"Cookie": ""}
    )
    assert answer.status == 403


def test_the_pages_speak_english_on_request(site: Site, page: Page) -> None:
    page.goto("/me/set-pin/unknown#not-a-real-token")
    page.get_by_role("link", name="EN").click()
    expect(page.locator("h1")).to_have_text("Set your roaming certificate PIN")
    page.locator("#f-pin").fill("123456")
    page.locator("#f-pin_again").fill("123456")
    page.get_by_role("button", name="Set the PIN").click()
    expect(page.locator("#e-pin")).to_contain_text("6 to 8 digits")
