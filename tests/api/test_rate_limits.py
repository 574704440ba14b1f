"""Abuse limits on OTP issuance over HTTP: per person across signers, per signer across people,
`rate_limited` with `Retry-After` (the CSC error shape on /csc/), counts that survive refusals."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.clock import FrozenClock
from app.models import OutboxMessage, SigningRequest
from app.runtime import Runtime
from tests.api.conftest import Keys
from tests.api.test_csc import Csc, assert_csc_error, digest_b64
from tests.api.test_signing_flow import request_otp
from tests.factories import Factory, Person
from tests.helpers import document_hash


async def otp_for(
    client: httpx.AsyncClient, key: str, person: Person, document: str
) -> httpx.Response:
    return await request_otp(client, key, person, document_hash=document_hash(document))


def issued(runtime: Runtime) -> tuple[int, int]:
    """Signing requests created and OTP e-mails queued."""
    with runtime.sessions() as session:
        requests = session.scalar(select(func.count()).select_from(SigningRequest))
        mails = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.purpose == "otp")
        )
    return requests or 0, mails or 0


def assert_rate_limited(response: httpx.Response, retry_after: int) -> str:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) == retry_after
    return str(response.json()["detail"])


async def test_five_otps_a_minute_per_person_then_rate_limited_until_the_window_rolls_over(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
    factory: Factory,
) -> None:
    for i in range(3):
        assert (await otp_for(client, api_keys.signer, person, f"PV-{i}")).status_code == 201
    clock.advance(25)
    for i in range(3, 5):  # a signer has at most 3 of the person's 5
        assert (await otp_for(client, api_keys.other_signer, person, f"PV-{i}")).status_code == 201
    clock.advance(5)
    # 10:00:30: the first three leave the count at 10:01:10 (a hit counts for the minute and
    # the 10-second bucket it fell in).
    third = factory.client("mygpki-sign", "signer")
    refused = await otp_for(client, third, person, "PV-5")
    assert "at most 5 OTPs a minute for one person" in assert_rate_limited(refused, 40)
    assert issued(runtime) == (5, 5)  # the refusal issued nothing
    clock.advance(39)
    assert_rate_limited(await otp_for(client, third, person, "PV-5"), 1)
    clock.advance(1)
    assert (await otp_for(client, third, person, "PV-5")).status_code == 201
    assert issued(runtime) == (6, 6)


async def test_a_signer_has_three_of_a_persons_otps_and_its_refusals_keep_its_own_limit_closed(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, clock: FrozenClock
) -> None:
    for i in range(3):
        assert (await otp_for(client, api_keys.signer, person, f"PV-{i}")).status_code == 201
    clock.advance(30)
    refused = [await otp_for(client, api_keys.signer, person, "PV-3") for _ in range(4)]
    assert [int(r.headers["Retry-After"]) for r in refused] == [40, 40, 70, 70]
    assert "at most 3 OTPs a minute for one person from this client" in assert_rate_limited(
        refused[0], 40
    )
    clock.advance(40)
    # The three OTPs are forgotten; the four refusals are not, so none fits until they are
    # forgotten too (10:01:40). Uncounted refusals would have let three through.
    assert_rate_limited(await otp_for(client, api_keys.signer, person, "PV-3"), 30)


async def test_a_flood_from_one_signer_never_fails_another_signers_request(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    clock: FrozenClock,
) -> None:
    for minute in range(3):  # the flood goes on; every minute the other signer gets through
        answers = [
            await otp_for(client, api_keys.signer, person, f"flood-{minute}-{i}") for i in range(30)
        ]
        assert sum(a.status_code == 201 for a in answers) == 3
        for i in range(2):  # the person's 5 less the flooder's 3
            answer = await otp_for(client, api_keys.other_signer, person, f"real-{minute}-{i}")
            assert answer.status_code == 201, answer.text
        clock.advance(80)
    # The flooder's refusals never counted against the person: (3 + 2) x 3 issued.
    assert issued(runtime) == (15, 15)


async def test_the_person_limit_spans_signers_and_each_signer_has_its_own(
    client: httpx.AsyncClient, api_keys: Keys, factory: Factory, runtime: Runtime
) -> None:
    runtime.settings.otps_per_signer_per_minute = 3
    people = [factory.person() for _ in range(4)]
    for someone in people[:3]:
        assert (await otp_for(client, api_keys.signer, someone, "PV-1")).status_code == 201
    refused = await otp_for(client, api_keys.signer, people[3], "PV-1")
    assert "at most 3 OTPs a minute for this client" in assert_rate_limited(refused, 70)
    # Another signer is not held back by this one's limit.
    assert (await otp_for(client, api_keys.other_signer, people[3], "PV-1")).status_code == 201

    runtime.settings.otps_per_signer_per_minute = 100
    person = people[0]
    for i in range(2, 5):
        assert (await otp_for(client, api_keys.other_signer, person, f"PV-{i}")).status_code == 201
    assert (await otp_for(client, api_keys.signer, person, "PV-5")).status_code == 201
    # Five for this person from two signers: a third signer is refused as well.
    third = factory.client("mygpki-sign", "signer")
    assert_rate_limited(await otp_for(client, third, person, "PV-6"), 70)


async def test_csc_send_otp_is_limited_in_the_csc_error_shape(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    csc = Csc(client, runtime, api_keys.signer)
    for i in range(3):
        sent = await csc.send_otp(person, digest_b64(f"attributes {i}"))
        assert sent.status_code == 204, sent.text
    refused = await csc.send_otp(person, digest_b64("attributes 5"))
    assert "at most 3 OTPs a minute for one person" in assert_csc_error(
        refused, "rate_limited", 429
    )
    assert int(refused.headers["Retry-After"]) == 70
    assert issued(runtime) == (3, 3)
