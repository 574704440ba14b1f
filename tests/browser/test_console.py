"""The administrators' console in a browser: a roaming application from the person's
verification link through JDN's approval in the console to a signature the person sees (and
a second request they decline) on /me/; an agency administrator who cannot see another
agency's person (and a form without its CSRF token refused); the bulk move's CSV upload,
progress and report."""

from __future__ import annotations

import csv
import io

from playwright.sync_api import Page, expect

from app.db import unit_of_work
from app.units import Services
from tests.browser.conftest import Browsing, Site, link_in_mail
from tests.factories import Person
from tests.helpers import otp_from_message, signing_request_body

NEW_PIN = "802461"


def administrator(
    site: Site, role: str, *, email: str, agency: str = "JDN", name: str = "Pentadbir"
) -> Person:
    admin = site.factory.person(agency=agency, email=email, name=name)
    with unit_of_work(site.sessions) as session:
        Services(site.factory.runtime, session).console_admins.grant(
            admin.mykad,
            role,
            agency if role == "agency_admin" else None,
            site.factory.now(),
            "test",
        )
    return admin


def console_sign_in(site: Site, browsing: Browsing, page: Page, admin: Person) -> None:
    page.goto("/console/")
    expect(page.locator("h1")).to_have_text("Log masuk konsol")
    page.locator("#f-mykad").fill(admin.mykad)
    page.get_by_role("button", name="Hantar kod OTP").click()
    expect(page.locator("#f-otp")).to_be_visible()
    request_id = {c["name"]: c["value"] for c in browsing.context.cookies()}["rs_console_signin"]
    message = site.sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=15)
    page.locator("#f-otp").fill(otp_from_message(message))
    page.locator("#f-pin").fill(admin.pin)
    page.get_by_role("button", name="Log masuk").click()
    expect(page.locator("h1")).to_contain_text(admin.name)


def test_an_application_approved_in_the_console_ends_in_a_signature_seen_on_me(
    site: Site, browsing: Browsing, page: Page
) -> None:
    jdn = administrator(site, "jdn_admin", name="Pentadbir Walk", email="walk.admin@jdn.gov.my")
    person = site.factory.person(name="Siti Walk", email="siti.walk@jdn.gov.my", roaming=False)
    portal = site.factory.client("portal-walk", "portal")
    backend_key = site.factory.client("igfmas-walk", "signer")
    with site.server.client(portal) as api:
        opened = api.post(f"/v1/users/{person.mykad}/roaming-applications")
        assert opened.status_code == 201, opened.text

    # The person verifies their address from the e-mailed link.
    person_page = browsing.new_page()
    person_page.goto(link_in_mail(site, "siti.walk@jdn.gov.my", "Pengesahan e-mel"))
    person_page.get_by_role("button", name="Sahkan alamat e-mel").click()
    expect(person_page.locator(".notice.ok")).to_contain_text("telah disahkan")

    # JDN approves it in the console.
    console_sign_in(site, browsing, page, jdn)
    page.get_by_role("link", name="Permohonan").first.click()
    page.get_by_role("link", name="Kelulusan JDN").click()
    page.get_by_role("button", name="Luluskan: Siti Walk").click()
    expect(page.locator(".notice.ok")).to_contain_text("Permohonan diluluskan")

    # The person sets the PIN from the PIN-setup link.
    person_page.goto(link_in_mail(site, "siti.walk@jdn.gov.my", "PIN"))
    person_page.locator("#f-pin").fill(NEW_PIN)
    person_page.locator("#f-pin_again").fill(NEW_PIN)
    person_page.get_by_role("button", name="Tetapkan PIN").click()
    expect(person_page.locator(".notice.ok")).to_contain_text("PIN anda telah ditetapkan")

    # A backend has a document signed, and asks for a second signature.
    signer = Person(person.mykad, person.name, person.email, person.user_id, None, NEW_PIN)
    with site.server.client(backend_key) as backend:
        signed = backend.post(
            "/v1/signing-requests",
            json=signing_request_body(signer, "W-1", document_name="Baucar W-1", channel="email"),
        ).json()
        otp = otp_from_message(
            site.sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == signed["id"], timeout=15)
        )
        answer = backend.post(
            f"/v1/signing-requests/{signed['id']}/signature", json={"otp": otp, "pin": NEW_PIN}
        )
        assert answer.status_code == 201, answer.text
        waiting = backend.post(
            "/v1/signing-requests",
            json=signing_request_body(signer, "W-2", document_name="Baucar W-2", channel="email"),
        ).json()

        # The person sees the signature on /me/ and declines the second request.
        person_page.goto("/me/")
        person_page.locator("#f-mykad").fill(person.mykad)
        person_page.get_by_role("button", name="Hantar kod OTP").click()
        expect(person_page.locator("#f-otp")).to_be_visible()
        me_request = {c["name"]: c["value"] for c in browsing.context.cookies()}["rs_me_signin"]
        sign_in_mail = site.sink.wait_for(
            lambda m: m["X-Roamsign-Request-Id"] == me_request, timeout=15
        )
        person_page.locator("#f-otp").fill(otp_from_message(sign_in_mail))
        person_page.locator("#f-pin").fill(NEW_PIN)
        person_page.get_by_role("button", name="Log masuk").click()
        expect(person_page.get_by_role("cell", name="Baucar W-1", exact=True)).to_be_visible()
        person_page.get_by_role("button", name="Tolak: Baucar W-2").click()
        expect(person_page.get_by_text("Tiada permintaan yang menunggu.")).to_be_visible()
        assert backend.get(f"/v1/signing-requests/{waiting['id']}").json()["status"] == "cancelled"

    # The console shows the person's new credential, active.
    page.get_by_role("link", name="Cari orang").first.click()
    page.locator("#f-mykad").fill(person.mykad)
    page.get_by_role("button", name="Cari").click()
    expect(page.locator("h1")).to_have_text("Siti Walk")
    expect(page.locator(".status-active")).to_have_text("aktif")
    assert browsing.external == [] and browsing.console_errors == []


def test_an_agency_administrator_cannot_see_another_agencys_person(
    site: Site, browsing: Browsing, page: Page
) -> None:
    sa = administrator(site, "agency_admin", agency="JPA", email="sa.jpa@jpa.gov.my")
    colleague = site.factory.person(name="Rakan JPA", agency="JPA")
    stranger = site.factory.person(name="Orang JDN Lain")
    console_sign_in(site, browsing, page, sa)
    page.get_by_role("link", name="Cari orang").first.click()
    page.locator("#f-mykad").fill(stranger.mykad)
    page.get_by_role("button", name="Cari").click()
    expect(page.locator("#e-mykad")).to_have_text(
        "Tiada orang dengan MyKad ini yang boleh anda lihat."
    )
    page.goto(f"/console/people/{stranger.user_id}")
    expect(page.locator("h1")).to_have_text("Halaman tidak dijumpai.")
    page.goto("/console/people")
    page.locator("#f-mykad").fill(colleague.mykad)
    page.get_by_role("button", name="Cari").click()
    expect(page.locator("h1")).to_have_text("Rakan JPA")
    expect(page.get_by_text("Peranti hanya ditunjukkan kepada pentadbir JDN.")).to_be_visible()
    # No bulk move for an agency administrator: not in the menu, refused at the door.
    expect(page.get_by_role("link", name="Pindahan pukal")).to_have_count(0)
    page.goto("/console/enrolments")
    expect(page.locator(".notice.error")).to_contain_text("pentadbir JDN sahaja")

    # A console form whose CSRF token is not the browser's is refused.
    page.goto("/console/people")
    page.locator("main input[name=csrf]").evaluate("field => field.value = 'forged'")
    page.locator("#f-mykad").fill(colleague.mykad)
    page.get_by_role("button", name="Cari").click()
    expect(page.locator(".notice.error")).to_contain_text("tamat tempoh atau tidak datang")
    assert page.request.post("/console/sign-out", form={}).status == 403
    page.goto("/console/")
    expect(page.locator("h1")).to_contain_text(sa.name)  # still signed in


def test_the_bulk_move_shows_its_progress_and_its_report(
    site: Site, browsing: Browsing, page: Page
) -> None:
    jdn = administrator(site, "jdn_admin", email="bulk.admin@jdn.gov.my")
    movers = [site.factory.person(email=f"bulk{n}@jdn.gov.my", roaming=False) for n in range(3)]
    upload = "mykad\n" + "".join(f"{p.mykad}\n" for p in movers) + "850101145555\n"
    console_sign_in(site, browsing, page, jdn)
    page.get_by_role("link", name="Pindahan pukal").first.click()
    page.get_by_role("button", name="Muat naik dan mulakan").click()
    expect(page.locator("#e-csv")).to_have_text("Pilih fail CSV.")
    page.locator("#f-csv").set_input_files(
        {"name": "pindahan.csv", "mimeType": "text/csv", "buffer": upload.encode()}
    )
    page.get_by_role("button", name="Muat naik dan mulakan").click()
    expect(page.locator("progress#progress")).to_be_visible()
    expect(page.get_by_text("Selesai.")).to_be_visible(timeout=15_000)
    expect(page.locator("progress#progress")).to_have_attribute("value", "4")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Muat turun laporan setiap baris (CSV)").click()
    report = downloading.value.path().read_text()
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[0] == ["mykad", "outcome", "application_id"]
    assert [row[1] for row in rows[1:]] == ["enrolled"] * 3 + ["unknown_person"]
    link_in_mail(site, "bulk0@jdn.gov.my", "Pengesahan e-mel")
    # (The refused empty upload, a 422, is the one error the browser logged.)
    assert browsing.external == [] and len(browsing.console_errors) == 1
