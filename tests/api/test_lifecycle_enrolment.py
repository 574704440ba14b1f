"""Bulk enrolment of token users over HTTP: the per-person report, idempotence, limits."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.models import OutboxMessage, RoamingApplication
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import expect_problem, mail, verify_email
from tests.factories import Factory
from tests.mailbox import mails


async def enrol(client: httpx.AsyncClient, key: str, mykads: list[object]) -> httpx.Response:
    return await client.post("/v1/roaming-enrolments", json={"mykads": mykads}, headers=bearer(key))


def count(runtime: Runtime, model: type[RoamingApplication] | type[OutboxMessage]) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def test_each_person_is_reported_and_only_the_right_ones_enrolled(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    first = factory.token_user(email="first@jdn.gov.my")
    second = factory.token_user(email="second@moh.gov.my", agency="KKM")
    roaming = factory.person(email="roaming@jdn.gov.my")
    no_email = factory.token_user(email=None)
    dashed = f"{second.mykad[:6]}-{second.mykad[6:8]}-{second.mykad[8:]}"
    given: list[object] = [
        first.mykad,
        dashed,
        roaming.mykad,
        "991231019999",
        "851301145555",
        no_email.mykad,
        first.mykad,
    ]

    answer = await enrol(client, api_keys.jdn_admin, given)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    outcomes = [(r["mykad"], r["outcome"]) for r in report["results"]]
    assert outcomes == [
        (first.mykad, "enrolled"),
        (second.mykad, "enrolled"),
        (roaming.mykad, "already_roaming"),
        ("991231019999", "unknown_person"),
        ("851301145555", "invalid_mykad"),
        (no_email.mykad, "no_email"),
        (first.mykad, "already_enrolled"),  # the same person twice: one application
    ]
    assert report["counts"] == {
        "enrolled": 2,
        "already_enrolled": 1,
        "already_roaming": 1,
        "unknown_person": 1,
        "invalid_mykad": 1,
        "no_email": 1,
    }
    first_application = report["results"][0]["application_id"]
    assert report["results"][6]["application_id"] == first_application
    assert count(runtime, RoamingApplication) == 2
    sent = mails(runtime.sessions, runtime.keys.outbox_seal, purpose="application_email")
    assert sorted(m.recipient for m in sent) == ["first@jdn.gov.my", "second@moh.gov.my"]

    # The e-mail's token verifies the application like any other.
    token = mail(runtime, "first@jdn.gov.my", "application_email").token
    verified = await verify_email(client, api_keys.portal, first_application, token)
    assert verified.status_code == 200 and verified.json()["origin"] == "enrolment"


async def test_running_it_again_changes_nothing(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    people = [factory.token_user(email=f"user{n}@jdn.gov.my") for n in range(5)]
    mykads: list[object] = [person.mykad for person in people]
    first = (await enrol(client, api_keys.jdn_admin, mykads)).json()
    assert first["counts"] == {"enrolled": 5}
    messages = count(runtime, OutboxMessage)

    again = (await enrol(client, api_keys.jdn_admin, mykads)).json()
    assert again["counts"] == {"already_enrolled": 5}
    assert [r["application_id"] for r in again["results"]] == [
        r["application_id"] for r in first["results"]
    ]
    assert count(runtime, RoamingApplication) == 5
    assert count(runtime, OutboxMessage) == messages  # nobody is e-mailed twice


async def test_up_to_a_thousand_a_call(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory
) -> None:
    person = factory.token_user()
    at_the_limit = await enrol(client, api_keys.jdn_admin, [person.mykad] * 1000)
    assert at_the_limit.status_code == 200
    assert at_the_limit.json()["counts"] == {"enrolled": 1, "already_enrolled": 999}
    over = await enrol(client, api_keys.jdn_admin, [person.mykad] * 1001)
    problem = expect_problem(over, 422, "validation_error")
    assert problem["errors"][0]["pointer"] == "/mykads"
    empty = await enrol(client, api_keys.jdn_admin, [])
    expect_problem(empty, 422, "validation_error")
    not_strings = await enrol(client, api_keys.jdn_admin, [850101145555])
    expect_problem(not_strings, 422, "validation_error")


async def test_only_jdn_enrols(client: httpx.AsyncClient, api_keys: Keys, factory: Factory) -> None:
    person = factory.token_user()
    for role in ("portal", "agency_admin", "signer"):
        refused = await enrol(client, getattr(api_keys, role), [person.mykad])
        expect_problem(refused, 403, "forbidden")
    anonymous = await client.post("/v1/roaming-enrolments", json={"mykads": [person.mykad]})
    expect_problem(anonymous, 401, "unauthenticated")
