"""A person on /me/: signs in with MyKad + OTP + PIN, sees a signature a backend made, declines
a second pending request (the backend sees it cancelled), and signing out ends the session;
downloads a certificate, deactivates their device, changes their e-mail address. And the
console's dashboard and audit trail for a JDN administrator (this module's server reused)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from playwright.sync_api import Page, expect

from tests.api.console_steps import grant
from tests.browser.conftest import Browsing, Site, link_in_mail, mail_text
from tests.helpers import otp_from_message, signing_request_body


def otp_for(site: Site, request_id: str) -> str:
    message = site.sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=15)
    return otp_from_message(message)


def test_a_person_sees_a_signature_declines_a_request_and_signs_out(
    site: Site, browsing: Browsing, page: Page
) -> None:
    person = site.factory.person(email="me.page@jdn.gov.my")
    key = site.factory.client("igfmas-me", "signer")
    with site.server.client(key) as backend:
        signed = backend.post(
            "/v1/signing-requests",
            json=signing_request_body(person, "PV-1", document_name="Baucar PV-1", channel="email"),
        ).json()
        answer = backend.post(
            f"/v1/signing-requests/{signed['id']}/signature",
            json={"otp": otp_for(site, signed["id"]), "pin": person.pin},
        )
        assert answer.status_code == 201, answer.text
        waiting = backend.post(
            "/v1/signing-requests",
            json=signing_request_body(person, "PV-2", document_name="Baucar PV-2", channel="email"),
        ).json()

        page.goto("/me/")
        expect(page.locator("h1")).to_have_text("Log masuk")
        page.locator("#f-mykad").fill(person.mykad)
        page.get_by_role("button", name="Hantar kod OTP").click()
        expect(page.locator("#f-otp")).to_be_visible()
        sign_in = site.sink.wait_for(
            lambda m: (
                "Log masuk roamsign" in m.get_body(("plain",)).get_content()
                and "me.page@" in str(m["To"])
            ),
            timeout=15,
        )
        page.locator("#f-otp").fill(otp_from_message(sign_in))
        page.locator("#f-pin").fill(person.pin)
        page.get_by_role("button", name="Log masuk").click()

        expect(page.locator("h1")).to_contain_text(person.name)
        expect(page.get_by_role("cell", name="Baucar PV-1", exact=True)).to_be_visible()
        expect(page.get_by_role("cell", name="Baucar PV-2", exact=True)).to_be_visible()
        page.get_by_role("button", name="Tolak: Baucar PV-2").click()
        expect(page.get_by_text("Tiada permintaan yang menunggu.")).to_be_visible()
        assert backend.get(f"/v1/signing-requests/{waiting['id']}").json()["status"] == "cancelled"

    cookies = {c["name"]: c for c in browsing.context.cookies()}
    session = cookies["rs_me"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    page.get_by_role("button", name="Log keluar").click()
    expect(page.locator("h1")).to_have_text("Log masuk")
    # The old cookie, replayed, opens nothing: the session ended on the server.
    browsing.context.add_cookies([session])
    page.goto("/me/")
    expect(page.locator("h1")).to_have_text("Log masuk")
    assert browsing.external == []


def test_a_wrong_code_is_said_next_to_the_field(site: Site, page: Page) -> None:
    person = site.factory.person(email="me.wrong@jdn.gov.my")
    page.goto("/me/sign-in")
    page.locator("#f-mykad").fill("12345")
    page.get_by_role("button", name="Hantar kod OTP").click()
    expect(page.locator("#e-mykad")).to_contain_text("12 digit")
    page.locator("#f-mykad").fill(person.mykad)
    page.get_by_role("button", name="Hantar kod OTP").click()
    page.locator("#f-otp").fill("000000")
    page.locator("#f-pin").fill("000000")
    page.get_by_role("button", name="Log masuk").click()
    expect(page.locator("#e-otp")).to_contain_text("Baki cubaan: 2")


def sign_in(site: Site, page: Page, mykad: str, email: str, pin: str) -> None:
    page.goto("/me/sign-in")
    page.locator("#f-mykad").fill(mykad)
    page.get_by_role("button", name="Hantar kod OTP").click()
    expect(page.locator("#f-otp")).to_be_visible()
    code = site.sink.wait_for(
        lambda m: (
            "Log masuk roamsign" in m.get_body(("plain",)).get_content() and email in str(m["To"])
        ),
        timeout=15,
    )
    page.locator("#f-otp").fill(otp_from_message(code))
    page.locator("#f-pin").fill(pin)
    page.get_by_role("button", name="Log masuk").click()
    expect(page.locator("h1")).to_contain_text("Selamat datang")


def test_a_person_downloads_a_certificate_deactivates_the_device_and_changes_the_email(
    site: Site, browsing: Browsing, page: Page
) -> None:
    person = site.factory.person(email="me.account@jdn.gov.my")
    sign_in(site, page, person.mykad, "me.account@jdn.gov.my", person.pin)

    page.get_by_role("link", name="Sijil saya").click()
    expect(page.locator(".status-active")).to_have_text("Aktif")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 900})
    fingerprint = page.locator("dd code.wrap").inner_text()
    with page.expect_download() as download:
        page.get_by_role("link", name="Muat turun (DER, .cer)").click()
    der = download.value
    assert der.suggested_filename.startswith("roamsign-") and der.suggested_filename.endswith(
        ".cer"
    )
    cer = page.request.get(
        page.get_by_role("link", name="Muat turun (DER, .cer)").get_attribute("href") or ""
    )
    assert cer.headers["content-type"] == "application/pkix-cert"
    certificate = x509.load_der_x509_certificate(cer.body())
    assert certificate.fingerprint(hashes.SHA256()).hex(":").upper() == fingerprint
    pem = page.request.get(
        page.get_by_role("link", name="Muat turun (PEM)").get_attribute("href") or ""
    )
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert x509.load_pem_x509_certificate(pem.body()) == certificate
    assert ".pem" in pem.headers["content-disposition"]

    # The device, activated after the sign-in (its OTPs would go to the app otherwise).
    app = site.factory.mobile_device(person)
    page.get_by_role("link", name="Peranti saya").click()
    page.get_by_role("link", name="Nyahaktifkan peranti ini").click()
    expect(page.locator("h1")).to_have_text("Nyahaktifkan peranti?")
    page.get_by_role("button", name="Ya, nyahaktifkan").click()
    expect(page.locator(".notice.ok")).to_contain_text("telah dinyahaktifkan")
    with site.server.client(site.factory.client("jdn-me", "jdn_admin")) as jdn:
        devices = jdn.get(f"/v1/users/{person.mykad}/devices").json()
    assert [(d["device_id"], d["status"]) for d in devices] == [(app.device_id, "deactivated")]

    page.get_by_role("link", name="Butiran hubungan").click()
    page.locator("#f-email").fill("bukan-emel")
    page.get_by_role("button", name="Hantar pautan pengesahan").click()
    expect(page.locator("#e-email")).to_contain_text("alamat e-mel yang sah")
    page.locator("#f-email").fill("me.baharu@jdn.gov.my")
    page.get_by_role("button", name="Hantar pautan pengesahan").click()
    expect(page.locator(".notice.ok")).to_contain_text("Pautan pengesahan telah dihantar")
    expect(page.get_by_text("me.baharu@jdn.gov.my")).to_be_visible()  # waiting, not in use
    link = link_in_mail(site, "me.baharu@jdn.gov.my", "Sahkan alamat e-mel baharu")
    page.goto(link)
    page.get_by_role("button", name="Sahkan alamat baharu").click()
    expect(page.locator(".notice.ok")).to_contain_text("kini digunakan")
    page.goto("/me/contact")
    expect(page.locator("dl.facts dd").first).to_have_text("me.baharu@jdn.gov.my")
    assert browsing.external == []


# The console's audit trail and dashboard, here to reuse this module's server.
def test_a_jdn_administrator_sees_the_dashboard_and_verifies_the_audit_chain(
    site: Site, browsing: Browsing, page: Page
) -> None:
    admin = site.factory.person(name="Pentadbir Konsol", email="console.jdn@jdn.gov.my")
    grant(site.factory, admin, "jdn_admin")
    page.goto("/console/sign-in")
    page.locator("#f-mykad").fill(admin.mykad)
    page.get_by_role("button", name="Hantar kod OTP").click()
    code = site.sink.wait_for(
        lambda m: "console.jdn@" in str(m["To"]) and "Log masuk roamsign" in mail_text(m),
        timeout=15,
    )
    page.locator("#f-otp").fill(otp_from_message(code))
    page.locator("#f-pin").fill(admin.pin)
    page.get_by_role("button", name="Log masuk").click()

    nav = page.get_by_role("navigation", name="Menu konsol")
    nav.get_by_role("link", name="Papan pemuka").click()
    expect(page.locator("h1")).to_have_text("Sejam yang lalu")
    expect(page.locator("figure.chart svg")).to_be_visible()
    expect(page.get_by_text("Baris gilir e-mel")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    nav.get_by_role("link", name="Jejak audit").click()
    page.locator("#f-action").fill("web.signed_in")
    page.get_by_role("button", name="Cari").click()
    expect(page.get_by_role("cell", name="web.signed_in").first).to_be_visible()
    page.get_by_role("button", name="Sahkan rantaian sekarang").click()
    expect(page.locator(".notice.ok")).to_contain_text("Rantaian utuh")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # still a phone
    # No inline script or style was needed: the CSP would have reported it as an error.
    assert browsing.external == [] and browsing.console_errors == []
