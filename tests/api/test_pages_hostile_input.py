"""Issue 18's bad input: every page route of /me/, /console/ and the token pages, sent what a
person (or a script posing as one) can type: NUL bytes, invalid UTF-8, 10,000 characters, an
RTL override, digits that are not ASCII, empty and missing fields, duplicated ones, the wrong
content type, bad CSRF, foreign or expired session cookies, ids that are nobody's or someone
else's, odd CSV files. Never a 5xx, never the PIN or OTP typed echoed back; a form's own
checks answer next to the field, in the page's language.

`ROUTES` lists the page routes with their forms; a route of the app missing from it fails
`test_every_page_route_is_walked`, so a new page is walked as soon as it is added."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from markupsafe import escape
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.main import create_app
from app.models import OutboxMessage
from app.models.device import DeviceMessage
from app.routers.pages.i18n import translate
from app.runtime import Runtime
from app.settings import Settings
from tests.api.console_steps import begin_sign_in, console_browser, csrf_of, grant, post_form
from tests.api.console_steps import sign_in as console_sign_in
from tests.conftest import runtime_on_test_engine
from tests.factories import Factory, Person
from tests.helpers import queued_otp

PAGE_PREFIXES = ("/me/", "/console/", "/lang/")


@dataclass(frozen=True)
class Page:
    """A page route: who may reach it (`me`, `console`, `anyone`) and its form's fields."""

    realm: str
    fields: tuple[str, ...] = ()
    multipart: bool = False


ROUTES: dict[tuple[str, str], Page] = {
    ("GET", "/lang/{language}"): Page("anyone"),
    # self-service
    ("GET", "/me/"): Page("me"),
    ("GET", "/me/sign-in"): Page("me"),
    ("POST", "/me/sign-in"): Page("me", ("mykad",)),
    ("GET", "/me/sign-in/code"): Page("me"),
    ("POST", "/me/sign-in/code"): Page("me", ("otp", "pin")),
    ("POST", "/me/requests/{request_id}/decline"): Page("me"),
    ("POST", "/me/sign-out"): Page("me"),
    ("GET", "/me/credentials"): Page("me"),
    ("GET", "/me/credentials/{credential_id}/certificate.{extension}"): Page("me"),
    ("GET", "/me/device"): Page("me"),
    ("GET", "/me/device/{device_id}/deactivate"): Page("me"),
    ("POST", "/me/device/{device_id}/deactivate"): Page("me"),
    ("GET", "/me/contact"): Page("me"),
    ("POST", "/me/contact"): Page("me", ("email",)),
    ("GET", "/me/{page}/{subject_id}"): Page("me"),
    ("POST", "/me/{page}/{subject_id}"): Page("me", ("token", "pin", "pin_again")),
    # the console
    ("GET", "/console/"): Page("console"),
    ("GET", "/console/sign-in"): Page("console"),
    ("POST", "/console/sign-in"): Page("console", ("mykad",)),
    ("GET", "/console/sign-in/code"): Page("console"),
    ("POST", "/console/sign-in/code"): Page("console", ("otp", "pin")),
    ("POST", "/console/sign-out"): Page("console"),
    ("GET", "/console/applications"): Page("console"),
    ("POST", "/console/applications/{application_id}/approval"): Page("console"),
    ("POST", "/console/applications/{application_id}/notification"): Page("console"),
    ("GET", "/console/people"): Page("console"),
    ("POST", "/console/people"): Page("console", ("mykad",)),
    ("GET", "/console/people/{user_id}"): Page("console"),
    ("POST", "/console/people/{user_id}/credentials/{credential_id}/unlock"): Page("console"),
    ("POST", "/console/people/{user_id}/credentials/{credential_id}/revocation"): Page(
        "console", ("reason",)
    ),
    ("POST", "/console/people/{user_id}/credentials/{credential_id}/renewal"): Page(
        "console", ("key_algorithm",)
    ),
    ("GET", "/console/enrolments"): Page("console"),
    ("POST", "/console/enrolments"): Page("console", ("csv",), multipart=True),
    ("GET", "/console/enrolments/{job_id}"): Page("console"),
    ("GET", "/console/enrolments/{job_id}/progress"): Page("console"),
    ("GET", "/console/enrolments/{job_id}/report.csv"): Page("console"),
    ("GET", "/console/dashboard"): Page("console"),
    ("GET", "/console/audit"): Page("console"),
    ("POST", "/console/audit/verification"): Page("console"),
}

# What a person can type in a field (one representative of each kind of trouble).
HOSTILE = (
    "",
    "85\x000101145555",
    "9" * 10_000,
    "\u202e850101145555",
    "abcdef",
    "²³⁴⁵⁶⁷",  # str.isdigit() says yes, int() says no
    "١٢٣٤٥٦",  # Arabic-Indic digits
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "\ufffd\ufeff",
)
# What a path or a cookie can hold instead of a row id (percent-encoded where a URL needs it).
HOSTILE_IDS = (
    "%00",
    "abc%00def",
    "not-a-row-id",
    "00000000-0000-0000-0000-000000000000",
    "%E2%80%AE" + "0" * 10,
    "%ED%A0%80",  # a lone surrogate, UTF-8 encoded
    "x" * 5_000,
    "..%2F..%2Fetc",
)
HOSTILE_COOKIES = ("\x00", "a\x00b", "x" * 4_000, "00000000-0000-0000-0000-000000000000", "\x7f")
TOKEN_PAGES = ("verify-address", "set-pin", "reset-pin", "confirm-email", "nope%00")
SECRET_FIELDS = ("otp", "pin", "pin_again", "token")
# A well-formed value of each field, beside the hostile one (so that the others pass the
# form's checks and the hostile one reaches as far as it can).
FILLER = {
    "mykad": "850101145555",
    "otp": "123456",
    "pin": "583920",  # tests.factories.DEFAULT_PIN
    "pin_again": "583920",
    "email": "new@jdn.gov.my",
    "token": "abcdefgh",
    "reason": "superseded",
    "key_algorithm": "ecdsa-p256",
}


@dataclass
class World:
    """The people a walk needs: the one signed in, someone else (another agency), and ids."""

    me: Person
    other: Person
    ids: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with console_browser(runtime) as client:
        yield client


@pytest.fixture
def world(factory: Factory) -> World:
    me = factory.person(email="me@jdn.gov.my")
    other = factory.person(email="other@kkm.gov.my", agency="KKM")
    others_device = factory.mobile_device(other).device_id
    return World(
        me,
        other,
        {
            "user_id": [me.user_id, other.user_id],
            "credential_id": [str(me.credential_id), str(other.credential_id)],
            "device_id": [others_device],
            "subject_id": [me.user_id, other.user_id],
            "request_id": [str(other.credential_id)],
            "application_id": [other.user_id],
            "job_id": [],
            "extension": ["pem", "cer", "txt"],
            "language": ["ms", "en", "fr", "%00", "x" * 3000],
            "page": list(TOKEN_PAGES),
        },
    )


def routes_of(runtime: Runtime) -> set[tuple[str, str]]:
    app = create_app(runtime=runtime, background_workers=False)
    found = set()
    for context in iter_route_contexts(app.routes):
        path, route = str(context.path), context.original_route
        if isinstance(route, APIRoute) and path.startswith(PAGE_PREFIXES):
            found.update((method, path) for method in route.methods if method != "HEAD")
    return found


def test_every_page_route_is_walked(runtime: Runtime) -> None:
    assert routes_of(runtime) == set(ROUTES)


def paths(template: str, ids: dict[str, list[str]]) -> list[str]:
    """The template with each of its parameters hostile in turn (the others plausible)."""
    names = re.findall(r"{(\w+)}", template)
    plausible = {name: (ids[name] or ["00000000-0000-0000-0000-000000000000"])[0] for name in names}
    out = []
    for name in names:
        values = list(HOSTILE_IDS) + ids[name] if name not in ("page", "extension") else ids[name]
        for value in values:
            chosen = {**plausible, name: value}
            out.append(template.format(**chosen))
    return out or [template]


def check(response: httpx.Response, typed: tuple[str, ...] = ()) -> None:
    where = f"{response.request.method} {str(response.request.url)[:200]}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:2000]}"
    if response.status_code >= 400:
        media_type = response.headers.get("content-type", "").split(";")[0]
        assert media_type in ("text/html", "application/problem+json", "application/json"), where
    for secret in typed:
        if len(secret) >= 6:
            assert secret not in response.text, f"{where} echoes a secret"
            assert html.escape(secret) not in response.text, f"{where} echoes a secret"


async def walk(web: httpx.AsyncClient, realm: str, ids: dict[str, list[str]]) -> int:
    """Every route of `realm` (and `anyone`), every field hostile in turn; the requests sent."""
    sent = 0
    # Signing out last, so the rest is walked signed in.
    for (method, template), page in sorted(ROUTES.items(), key=lambda r: "sign-out" in r[0][1]):
        if page.realm not in (realm, "anyone"):
            continue
        if method == "GET":
            for value in HOSTILE[1:]:
                query = {name: value[:4_000] for name in QUERY_NAMES}  # httpx: 64 KiB at most
                check(await web.get(paths(template, ids)[0], params=query))
                sent += 1
        for number, path in enumerate(paths(template, ids)):
            if method == "GET":
                check(await web.get(path))
            elif number == 0:  # every field and body on one plausible path
                sent += await post_hostile(web, path, page)
            else:  # a hostile id: one well-formed form is enough
                fields = {name: FILLER[name] for name in page.fields}
                token = web.cookies.get("rs_csrf", "")
                check(await web.post(path, data={"csrf": token, **fields}))
            sent += 1
    return sent


QUERY_NAMES = ("done", "waiting", "before", "mykad", "action", "since", "until", "next")


async def post_hostile(web: httpx.AsyncClient, path: str, page: Page) -> int:
    token = web.cookies.get("rs_csrf") or await csrf_of(web, "/me/sign-in")
    sent = 0
    if page.multipart:
        return await post_uploads(web, path, token)
    for name in page.fields:
        for value in HOSTILE:
            fields = {other: FILLER[other] for other in page.fields} | {name: value}
            typed = tuple(v for k, v in fields.items() if k in SECRET_FIELDS)
            check(await web.post(path, data={"csrf": token, **fields}), typed)
            sent += 1
    raw = "application/x-www-form-urlencoded"
    bodies: list[tuple[bytes, str | None]] = [
        (f"csrf={token}&".encode() + b"pin=\xff\xfe12345&otp=%ED%A0%80", raw),
        (f"csrf={token}&csrf=other&mykad=1&mykad=2&pin=%00%00".encode(), raw),
        ("&".join(f"f{n}=1" for n in range(80)).encode() + f"&csrf={token}".encode(), raw),
        (f'{{"csrf": "{token}", "mykad": "850101145555"}}'.encode(), "application/json"),
        (b"--x\r\nContent-Disposition: form-data; name=csrf\r\n\r\nabc\r\n--x--", None),
        (f"csrf={token}".encode(), "multipart/form-data; boundary=zz"),
        (b"mykad=850101145555", raw),  # no CSRF at all
        (b"csrf=wrong&pin=123456", raw),
        (f"csrf={token}".encode(), raw),  # every field missing
        (f"csrf={token}".encode(), "text/plain"),
    ]
    for body, content_type in bodies:
        headers = {"Content-Type": content_type} if content_type else {}
        answer = await web.post(path, content=body, headers=headers)
        check(answer)
        if b"csrf=" not in body or body.startswith(b"csrf=wrong"):
            assert answer.status_code == 403 and "text/html" in answer.headers["content-type"]
        sent += 1
    return sent


CSV_FILES = (
    b"",
    b"mykad\n",
    b"\xef\xbb\xbfmykad\r\n850101145555\r\n85\x000101145555\r\n",
    "mykad\n850101145555\n".encode("utf-16"),
    "mykad\nJos\xe9\n".encode("latin-1"),
    b'"unterminated\n850101145555\n',
    b"\x00\x00\x00\x00",
    b"mykad,name\n" + b"\xe2\x80\xae85010114555\n" + b"9" * 10_000 + b"\n",
)


async def post_uploads(web: httpx.AsyncClient, path: str, token: str) -> int:
    sent = 0
    for content in CSV_FILES:
        answer = await web.post(path, data={"csrf": token}, files={"csv": ("x.csv", content)})
        check(answer)
        sent += 1
        if answer.status_code == 303:
            await finished(web, answer.headers["location"])
    huge = b"mykad\n" + b"850101145555\n" * 20_000
    check(await web.post(path, data={"csrf": token}, files={"csv": ("big.csv", huge)}))
    two = {"csv": ("a.csv", b"mykad\n"), "other": ("b.csv", b"mykad\n")}
    check(await web.post(path, data={"csrf": token}, files=two))
    check(await web.post(path, data={"csrf": token, "csv": "850101145555"}))
    check(await web.post(path, files={"csv": ("x.csv", b"mykad\n")}))  # no CSRF
    check(await web.post(path, content=b"--zz\r\nbroken", headers=MULTIPART_ZZ))
    check(await web.post(path, json={"csrf": token}))
    return sent + 6


MULTIPART_ZZ = {"Content-Type": "multipart/form-data; boundary=zz"}


async def finished(web: httpx.AsyncClient, job: str) -> None:
    """Waits for an upload's job (its task runs on this event loop) before the test ends."""
    for _ in range(500):
        progress = await web.get(f"{job}/progress")
        if progress.status_code != 200 or progress.json()["finished"]:
            return
        await asyncio.sleep(0.01)


async def me_sign_in(web: httpx.AsyncClient, runtime: Runtime, person: Person) -> None:
    started = await post_form(web, "/me/sign-in", {"mykad": person.mykad})
    assert started.status_code == 303, started.text
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, web.cookies["rs_me_signin"])
    done = await post_form(
        web, "/me/sign-in/code", {"otp": otp, "pin": person.pin}, from_page="/me/sign-in/code"
    )
    assert done.status_code == 303, done.text


async def with_cookies(web: httpx.AsyncClient, names: tuple[str, ...]) -> None:
    """Each page with each hostile value in each of `names` (session, sign-in, CSRF cookies)."""
    kept = dict(web.cookies)
    for name in names:
        for value in HOSTILE_COOKIES:
            web.cookies.clear()
            web.cookies.update(kept)
            web.cookies.set(name, value, domain="roamsign.test")
            for (method, template), page in ROUTES.items():
                if "{" in template or page.multipart:
                    continue
                prefix = "/me/" if name.startswith(("rs_me", "rs_csrf", "rs_lang")) else ""
                if not template.startswith(prefix or "/console/"):
                    continue
                if method == "GET":
                    check(await web.get(template))
                else:
                    body = {"csrf": value} | {f: "123456" for f in page.fields}
                    check(await web.post(template, data=body))
    web.cookies.clear()
    web.cookies.update(kept)


async def test_signed_out_nothing_breaks(
    web: httpx.AsyncClient, factory: Factory, world: World
) -> None:
    admin = factory.person(email="admin@jdn.gov.my")
    grant(factory, admin, "jdn_admin")
    # Sign-ins begun, so that the code forms reach their checks and the database.
    assert (await post_form(web, "/me/sign-in", {"mykad": world.me.mykad})).status_code == 303
    assert (await begin_sign_in(web, admin.mykad)).status_code == 303
    await walk(web, "me", world.ids)
    await walk(web, "console", world.ids)
    await with_cookies(web, ("rs_me", "rs_me_signin", "rs_console", "rs_console_signin"))
    await with_cookies(web, ("rs_csrf", "rs_lang"))


async def test_a_signed_in_person_breaks_nothing(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory, world: World
) -> None:
    await me_sign_in(web, runtime, world.me)
    world.ids["device_id"].append(factory.mobile_device(world.me).device_id)  # OTP now by app
    await with_cookies(web, ("rs_me", "rs_csrf"))
    await walk(web, "console", world.ids)  # a person's cookie is no console session
    await walk(web, "me", world.ids)


async def test_an_expired_session_signs_in_again(
    web: httpx.AsyncClient, runtime: Runtime, world: World
) -> None:
    await me_sign_in(web, runtime, world.me)
    runtime.clock.advance(hours=9)  # beyond web_session_max_seconds
    for path in ("/me/", "/me/credentials", "/me/device", "/me/contact"):
        answer = await web.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/me/sign-in"


@pytest.mark.parametrize("role", ["jdn_admin", "agency_admin"])
async def test_a_signed_in_administrator_breaks_nothing(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory, world: World, role: str
) -> None:
    admin = factory.person(email="admin@jdn.gov.my")
    grant(factory, admin, role, "JDN" if role == "agency_admin" else None)
    await console_sign_in(web, runtime, admin)
    await with_cookies(web, ("rs_console", "rs_csrf"))
    await walk(web, "me", world.ids)  # a console cookie is no self-service session
    await walk(web, "console", world.ids)
    await console_sign_in(web, runtime, admin)
    runtime.clock.advance(hours=9)  # beyond web_session_max_seconds: an expired session
    for path in ("/console/", "/console/people", "/console/audit", "/console/dashboard"):
        answer = await web.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"


def shows(answer: httpx.Response, language: str, errors: dict[str, str]) -> None:
    """Each field's message next to it (`e-<field>`, the input's aria-describedby), in
    `language`."""
    assert answer.status_code == 422, answer.text
    for name, key in errors.items():
        expected = f'id="e-{name}">{escape(translate(language, key))}</p>'
        assert expected in answer.text, (name, language, answer.text)


LANGUAGES = ("ms", "en")


async def test_signed_out_forms_answer_next_to_the_field_in_the_language(
    web: httpx.AsyncClient, factory: Factory, world: World
) -> None:
    admin = factory.person(email="admin@jdn.gov.my")
    grant(factory, admin, "jdn_admin")
    assert (await post_form(web, "/me/sign-in", {"mykad": world.me.mykad})).status_code == 303
    assert (await begin_sign_in(web, admin.mykad)).status_code == 303
    code = {"otp": "12a", "pin": "\u202e1234"}
    code_errors = {"otp": "signin.otp_invalid", "pin": "signin.pin_invalid"}
    set_pin = f"/me/set-pin/{world.me.user_id}"
    for language in LANGUAGES:
        web.cookies.set("rs_lang", language, domain="roamsign.test")
        for realm in ("/me", "/console"):
            mykad = await post_form(web, f"{realm}/sign-in", {"mykad": "85\x000101"})
            shows(mykad, language, {"mykad": "signin.mykad_invalid"})
            typed = await post_form(web, f"{realm}/sign-in/code", code)
            shows(typed, language, code_errors)
            # Digits, but not ASCII ones: told so, no attempt counted against the code.
            digits = {"otp": "١٢٣٤٥٦", "pin": "²³⁴⁵⁶⁷"}
            shows(await post_form(web, f"{realm}/sign-in/code", digits), language, code_errors)
        weak = await post_form(web, set_pin, {"token": "t", "pin": "²³⁴⁵⁶⁷", "pin_again": ""})
        shows(weak, language, {"pin": "pin.invalid"})
        check(weak, ("²³⁴⁵⁶⁷",))
        again = {"token": "t", "pin": world.me.pin, "pin_again": world.me.pin + "0"}
        shows(await post_form(web, set_pin, again), language, {"pin_again": "pin.mismatch"})


async def test_signed_in_forms_answer_next_to_the_field_in_the_language(
    web: httpx.AsyncClient, runtime: Runtime, factory: Factory, world: World
) -> None:
    await me_sign_in(web, runtime, world.me)
    admin = factory.person(email="admin@jdn.gov.my")
    grant(factory, admin, "jdn_admin")
    await console_sign_in(web, runtime, admin)
    person = f"/console/people/{world.other.user_id}"
    credential = f"{person}/credentials/{world.other.credential_id}"
    for language in LANGUAGES:
        web.cookies.set("rs_lang", language, domain="roamsign.test")
        email = await post_form(web, "/me/contact", {"email": "a@b@c\x00"})
        shows(email, language, {"email": "me2.email_invalid"})
        found = await post_form(web, "/console/people", {"mykad": "٨٥٠١٠١١٤٥٥٥٥"})
        shows(found, language, {"mykad": "signin.mykad_invalid"})
        query = {"mykad": "x", "action": "A B", "since": "2026-02-30T10:00", "until": "²"}
        shows(
            await web.get("/console/audit", params=query),
            language,
            {
                "mykad": "signin.mykad_invalid",
                "action": "console.audit.action_invalid",
                "since": "console.audit.time_invalid",
                "until": "console.audit.time_invalid",
            },
        )
        reason = await post_form(
            web, f"{credential}/revocation", {"reason": "\x00"}, from_page=person
        )
        field_id = f"reason-{world.other.credential_id}"
        shows(reason, language, {field_id: "console.person.reason_invalid"})
        renewal = await post_form(
            web, f"{credential}/renewal", {"key_algorithm": "rsa-1"}, from_page=person
        )
        field_id = f"key_algorithm-{world.other.credential_id}"
        shows(renewal, language, {field_id: "console.person.algorithm_invalid"})
        token = await csrf_of(web, "/console/enrolments")
        for content, key in (
            (b"", "console.enrolments.no_file"),
            (b"\xff\xfe", "console.enrolments.not_csv"),
        ):
            files = {"csv": ("x.csv", content)} if content else None
            upload = await web.post("/console/enrolments", data={"csrf": token}, files=files)
            shows(upload, language, {"csv": key})


async def test_a_sign_in_by_the_app_breaks_nothing(
    web: httpx.AsyncClient, factory: Factory, world: World
) -> None:
    """A person with an active device gets the sign-in's OTP in the app, not by e-mail: the
    code form is walked with that sign-in pending."""
    factory.mobile_device(world.me)
    assert (await post_form(web, "/me/sign-in", {"mykad": world.me.mykad})).status_code == 303
    with factory.runtime.sessions() as session:
        by_app = session.scalars(select(DeviceMessage)).all()
        assert [message.request_id for message in by_app] == [web.cookies["rs_me_signin"]]
    await walk(web, "me", world.ids)


async def test_without_self_service_every_page_of_it_is_not_found(
    settings: Settings,
    clock: FrozenClock,
    sessions: sessionmaker[Session],
    engine: Engine,
    factory: Factory,
    world: World,
) -> None:
    """ROAMSIGN_SELF_SERVICE=false: every /me/ route (the token pages included) answers 404,
    whatever it is sent, and a sign-in sends no OTP."""

    def messages() -> tuple[list[str], list[int]]:
        with sessions() as session:
            return (
                list(session.scalars(select(OutboxMessage.id))),
                list(session.scalars(select(DeviceMessage.id))),
            )

    before = messages()
    closed = settings.model_copy(update={"self_service": False})
    with runtime_on_test_engine(closed, clock, sessions, engine) as runtime:
        async with console_browser(runtime) as web:
            sent = 0
            for (method, template), page in ROUTES.items():
                if page.realm != "me":
                    continue
                for path in paths(template, world.ids):
                    for value in (None, *HOSTILE) if method == "POST" else (None,):
                        fields = {name: FILLER[name] for name in page.fields}
                        fields["mykad"] = world.me.mykad
                        fields |= {name: value for name in page.fields if value is not None}
                        answer = await (
                            web.get(path) if method == "GET" else web.post(path, data=fields)
                        )
                        assert answer.status_code == 404, f"{method} {path[:200]}"
                        sent += 1
            assert sent > 100
    assert messages() == before
