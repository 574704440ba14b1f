"""The audit trail over HTTP: filters, pages, roles, and nothing secret in it."""

from __future__ import annotations

import httpx

from app.clock import FrozenClock
from app.runtime import Runtime
from tests.api.conftest import Keys, bearer
from tests.api.lifecycle_steps import NEW_PIN, active_credential, expect_problem, mail
from tests.factories import Factory


async def events(client: httpx.AsyncClient, key: str, **params: object) -> httpx.Response:
    return await client.get("/v1/audit-events", params=params, headers=bearer(key))


async def test_a_persons_lifecycle_is_in_the_trail(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    person = factory.token_user()
    other = factory.token_user(email="other@jdn.gov.my")
    clock.advance(60)
    credential_id = await active_credential(client, api_keys, runtime, person)
    answer = await events(client, api_keys.jdn_admin, mykad=person.mykad)
    assert answer.status_code == 200, answer.text
    trail = answer.json()["events"]
    assert [e["action"] for e in trail] == [
        "user.created",
        "credential.recorded",
        "application.opened",
        "application.email_verified",
        "credential.issued",
        "application.approved",
        "credential.pin_set",
    ]
    assert {e["mykad_masked"] for e in trail} == {"********" + person.mykad[-4:]}
    assert trail[-1]["target_id"] == credential_id
    assert trail[2]["actor"] == "portal" and trail[5]["actor"] == "jdn"
    # Nothing secret: not the tokens, not the PIN, not the full MyKad.
    text = answer.text
    for secret in (
        NEW_PIN,
        person.mykad,
        mail(runtime, "aisyah@jdn.gov.my", "pin_setup").token,
        mail(runtime, "aisyah@jdn.gov.my", "application_email").token,
    ):
        assert secret not in text

    by_action = (await events(client, api_keys.jdn_admin, action="user.created")).json()
    assert len(by_action["events"]) == 2
    since = (
        await events(
            client, api_keys.jdn_admin, since="2026-11-27T10:01:00Z", action="user.created"
        )
    ).json()
    assert since["events"] == []
    dashed = f"{other.mykad[:6]}-{other.mykad[6:8]}-{other.mykad[8:]}"
    assert [
        e["action"]
        for e in (await events(client, api_keys.jdn_admin, mykad=dashed)).json()["events"]
    ] == ["user.created", "credential.recorded"]


async def test_pages(client: httpx.AsyncClient, api_keys: Keys, factory: Factory) -> None:
    for n in range(5):
        factory.token_user(email=f"p{n}@jdn.gov.my")
    seen: list[int] = []
    after = None
    while True:
        params: dict[str, object] = {"action": "user.created", "limit": 2}
        if after is not None:
            params["after"] = after
        page = (await events(client, api_keys.jdn_admin, **params)).json()
        seen += [e["id"] for e in page["events"]]
        after = page["next_after"]
        if after is None:
            break
    assert len(seen) == 5 and seen == sorted(seen)


async def test_audit_refusals(client: httpx.AsyncClient, api_keys: Keys) -> None:
    for role in ("portal", "agency_admin", "signer"):
        expect_problem(await events(client, getattr(api_keys, role)), 403, "forbidden")
    expect_problem(await client.get("/v1/audit-events"), 401, "unauthenticated")
    for params in (
        {"mykad": "851301145555"},
        {"since": "yesterday"},
        {"since": "2026-11-27T10:00:00"},
        {"since": "0.5"},  # a Unix time is not RFC 3339 (found by schemathesis)
        {"since": "1764237600"},
        {"limit": 0},
        {"limit": 501},
        {"after": -1},
    ):
        expect_problem(await events(client, api_keys.jdn_admin, **params), 422, "validation_error")
