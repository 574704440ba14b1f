"""The console's sign-in and its scoping, over ASGI on the test database: administrators only,
a non-administrator answered as one (no code sent), CSRF on every form, sign-out."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.models import AuditEvent, Credential, OutboxMessage
from app.runtime import Runtime
from tests.api.conftest import Keys
from tests.api.console_steps import (
    CSRF,
    begin_sign_in,
    console_browser,
    csrf_of,
    grant,
    post_form,
    sign_in,
)
from tests.api.lifecycle_steps import mail, open_application, verify_email
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
    runtime: Runtime, factory: Factory
) -> None:
    admin = factory.person(email="admin@jdn.gov.my")
    grant(factory, admin, "jdn_admin")
    person = factory.person(email="admin@jdn.gov.my")  # the same masked destination
    answers: list[list[tuple[int, str]]] = []
    for who in (admin, person):
        async with console_browser(runtime) as web:
            before = outbox_size(runtime)
            started = await begin_sign_in(web, who.mykad)
            sent = outbox_size(runtime) - before
            seen = [(started.status_code, started.headers["location"])]
            page = await web.get("/console/sign-in/code")
            seen.append((page.status_code, CSRF.sub("", page.text)))
            for _ in range(4):
                wrong = await post_form(
                    web, "/console/sign-in/code", {"otp": "000000", "pin": who.pin}
                )
                seen.append((wrong.status_code, CSRF.sub("", wrong.text)))
            assert "rs_console" not in web.cookies
            answers.append(seen)
        assert sent == (1 if who is admin else 0)  # the OTP is withheld
    assert answers[0] == answers[1]
    assert [status for status, _ in answers[0]] == [303, 200, 403, 403, 403, 409]


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


async def test_applications_are_scoped_to_the_agency_and_approved_by_jdn(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory, api_keys: Keys
) -> None:
    jdn = factory.person(name="Pentadbir JDN")
    grant(factory, jdn, "jdn_admin")
    sa = factory.person(name="Pentadbir JPA", agency="JPA")
    grant(factory, sa, "agency_admin", "JPA")
    ours = factory.person(name="Orang JDN", email="orang.jdn@jdn.gov.my", roaming=False)
    theirs = factory.person(
        name="Orang JPA", email="orang.jpa@jpa.gov.my", agency="JPA", roaming=False
    )
    application_id = (await open_application(web, api_keys.portal, ours)).json()["id"]
    token = mail(runtime, "orang.jdn@jdn.gov.my", "application_email").token
    assert (await verify_email(web, api_keys.portal, application_id, token)).status_code == 200
    other_id = (await open_application(web, api_keys.portal, theirs)).json()["id"]

    async with console_browser(runtime) as agency:
        await sign_in(agency, runtime, sa)
        listed = (await agency.get("/console/applications")).text
        assert "Orang JPA" in listed and "Orang JDN" not in listed
        assert "Luluskan" not in listed
        refused = await post_form(
            agency, f"/console/applications/{application_id}/approval", {}, from_page="/console/"
        )
        assert refused.status_code == 403
        hidden = await post_form(
            agency,
            f"/console/applications/{application_id}/notification",
            {},
            from_page="/console/",
        )
        assert hidden.status_code == 404
        resent = await post_form(
            agency, f"/console/applications/{other_id}/notification", {}, from_page="/console/"
        )
        assert resent.headers["location"] == "/console/applications?done=resent"

    await sign_in(web, runtime, jdn)
    listed = (await web.get("/console/applications?waiting=approval")).text
    assert "Orang JDN" in listed and "Orang JPA" not in listed
    approved = await post_form(
        web, f"/console/applications/{application_id}/approval", {}, from_page="/console/"
    )
    assert approved.headers["location"] == "/console/applications?done=approved"
    assert "PIN" in mail(runtime, "orang.jdn@jdn.gov.my", "pin_setup").subject
    with runtime.sessions() as session:
        actors = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "application.approved")
        ).all()
    assert actors == [f"console:{jdn.user_id}"]


async def test_another_agencys_person_is_answered_as_nobody(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    sa = factory.person(agency="JPA")
    grant(factory, sa, "agency_admin", "JPA")
    colleague = factory.person(name="Rakan JPA", agency="JPA")
    stranger = factory.person(name="Orang JDN")
    await sign_in(web, runtime, sa)

    found = await post_form(web, "/console/people", {"mykad": colleague.mykad})
    assert found.headers["location"] == f"/console/people/{colleague.user_id}"
    page = (await web.get(found.headers["location"])).text
    assert "Rakan JPA" in page and "Batalkan" not in page  # revoking is JDN's

    other = await post_form(web, "/console/people", {"mykad": stranger.mykad})
    unknown = await post_form(web, "/console/people", {"mykad": "850101145555"})
    assert other.status_code == unknown.status_code == 404
    assert other.text.replace(stranger.mykad, "M") == unknown.text.replace("850101145555", "M")
    assert (await web.get(f"/console/people/{stranger.user_id}")).status_code == 404
    step = f"/console/people/{colleague.user_id}/credentials/{colleague.credential_id}/revocation"
    refused = await post_form(web, step, {"reason": "keyCompromise"}, from_page="/console/")
    assert refused.status_code == 403


async def test_jdn_revokes_with_a_reason_chosen_from_rfc_5280(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")
    person = factory.person(name="Orang Batal")
    await sign_in(web, runtime, jdn)
    step = f"/console/people/{person.user_id}/credentials/{person.credential_id}/revocation"
    page = f"/console/people/{person.user_id}"
    wrong = await post_form(web, step, {"reason": "because"}, from_page=page)
    assert wrong.status_code == 422
    assert f'id="e-reason-{person.credential_id}"' in wrong.text
    done = await post_form(web, step, {"reason": "keyCompromise"}, from_page=page)
    assert done.headers["location"] == f"{page}?done=revoked"
    shown = (await web.get(done.headers["location"])).text
    assert "dibatalkan" in shown and "keyCompromise" in shown


async def test_jdn_moves_token_users_from_a_csv_and_downloads_the_report(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")
    sa = factory.person(agency="JPA")
    grant(factory, sa, "agency_admin", "JPA")
    token_user = factory.person(email="token.user@jdn.gov.my", roaming=False)
    no_email = factory.person(email=None, roaming=False)
    roaming = factory.person()
    upload = (
        f"nama,mykad\nA,{token_user.mykad}\nB,{no_email.mykad}\nC,{roaming.mykad}\n"
        f"D,850101145555\nE,12345\nA again,{token_user.mykad}\n"
    )
    async with console_browser(runtime) as agency:
        await sign_in(agency, runtime, sa)
        assert (await agency.get("/console/enrolments")).status_code == 403

    await sign_in(web, runtime, jdn)
    token = await csrf_of(web, "/console/enrolments")
    refused = await web.post("/console/enrolments", files={"csv": ("a.csv", upload.encode())})
    assert refused.status_code == 403
    empty = await web.post("/console/enrolments", data={"csrf": token})
    assert empty.status_code == 422 and 'id="e-csv"' in empty.text
    started = await web.post(
        "/console/enrolments", data={"csrf": token}, files={"csv": ("a.csv", upload.encode())}
    )
    assert started.status_code == 303, started.text
    job = started.headers["location"]
    progress: dict[str, Any] = {}
    for _ in range(500):
        progress = (await web.get(f"{job}/progress")).json()
        if progress["finished"]:
            break
        await asyncio.sleep(0.01)
    assert progress["done"] == progress["total"] == 6 and not progress["failed"]
    assert progress["counts"] == {
        "already_enrolled": 1,
        "already_roaming": 1,
        "enrolled": 1,
        "invalid_mykad": 1,
        "no_email": 1,
        "unknown_person": 1,
    }
    page = (await web.get(job)).text
    assert "report.csv" in page and "progress.js" in page
    report = await web.get(f"{job}/report.csv")
    assert report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["mykad", "outcome", "application_id"]
    assert [row[:2] for row in rows[1:]] == [
        [token_user.mykad, "enrolled"],
        [no_email.mykad, "no_email"],
        [roaming.mykad, "already_roaming"],
        ["850101145555", "unknown_person"],
        ["12345", "invalid_mykad"],
        [token_user.mykad, "already_enrolled"],
    ]
    assert mail(runtime, "token.user@jdn.gov.my", "application_email").token
    # Another administrator (here, in the same browser) never sees the job.
    other = factory.person()
    grant(factory, other, "jdn_admin")
    await sign_in(web, runtime, other)
    assert (await web.get(f"{job}/progress")).status_code == 404


async def test_jdn_unlocks_and_renews_and_the_pages_speak_english(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")
    person = factory.person(name="Orang Kunci", email="kunci@jdn.gov.my")
    with runtime.sessions.begin() as session:
        session.execute(
            update(Credential)
            .where(Credential.id == person.credential_id)
            .values(status="locked", pin_failures=5, locked_at=factory.now())
        )
    await sign_in(web, runtime, jdn)
    page = f"/console/people/{person.user_id}"
    steps = f"{page}/credentials/{person.credential_id}"
    unlocked = await post_form(web, f"{steps}/unlock", {}, from_page=page)
    assert unlocked.headers["location"] == f"{page}?done=unlocked"
    wrong = await post_form(web, f"{steps}/renewal", {"key_algorithm": "dsa"}, from_page=page)
    assert wrong.status_code == 422 and f'id="e-key_algorithm-{person.credential_id}"' in wrong.text
    renewed = await post_form(web, f"{steps}/renewal", {"key_algorithm": ""}, from_page=page)
    assert renewed.headers["location"] == f"{page}?done=renewed"
    assert mail(runtime, "kunci@jdn.gov.my", "pin_setup").token

    web.cookies.set("rs_lang", "en", domain="roamsign.test")
    shown = (await web.get(f"{page}?done=renewed")).text
    assert "A new credential is issued" in shown and "waiting for its PIN" in shown
    again = await post_form(web, f"{steps}/unlock", {}, from_page=page)
    assert again.status_code == 409 and "the credential is not locked" in again.text


async def test_what_is_typed_into_an_address_or_a_cookie_never_reaches_the_database(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")
    await sign_in(web, runtime, jdn)
    for path in ("/console/people/%00", "/console/people/x'--", "/console/enrolments/%00"):
        assert (await web.get(path)).status_code == 404
    for path in (
        "/console/applications/%00/approval",
        "/console/applications/%00/notification",
        f"/console/people/{jdn.user_id}/credentials/%00/unlock",
    ):
        assert (await post_form(web, path, {}, from_page="/console/")).status_code == 404
    web.cookies.set("rs_console_signin", "\x00", domain="roamsign.test")
    assert (await web.get("/console/sign-in/code")).status_code == 303


async def test_a_wrong_or_malformed_code_is_shown_next_to_its_field(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    admin = factory.person()
    grant(factory, admin, "jdn_admin")
    assert (await begin_sign_in(web, admin.mykad)).status_code == 303
    code = "/console/sign-in/code"
    malformed = await post_form(web, code, {"otp": "12", "pin": "x"})
    assert malformed.status_code == 422
    assert 'id="e-otp"' in malformed.text and 'id="e-pin"' in malformed.text
    wrong = await post_form(web, code, {"otp": "000000", "pin": "999999"})
    assert wrong.status_code == 403 and "Baki cubaan: 2." in wrong.text
