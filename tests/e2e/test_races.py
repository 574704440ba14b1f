"""One OTP, one signature, under concurrency: on PostgreSQL with two server processes.

On SQLite (one process by design) the same tests run against one worker's thread pool.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.mailsink import MailSink
from app.models import Signature, SigningRequest
from tests.e2e.conftest import Server, ServerStarter
from tests.factories import Factory, Person
from tests.helpers import document_hash, otp_from_message


@pytest.fixture
def workers(is_postgres: bool) -> int:
    return 2 if is_postgres else 1


def open_request(server: Server, key: str, person: Person, sink: MailSink) -> tuple[str, str]:
    with server.client(key) as client:
        created = client.post(
            "/v1/signing-requests",
            json={"mykad": person.mykad, "document_hash": document_hash(), "document_name": "PV"},
        )
        assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=10)
    return request_id, otp_from_message(message)


async def submit_all(
    server: Server, key: str, request_id: str, bodies: list[dict[str, str]]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    ) as client:
        start = asyncio.Event()

        async def one(body: dict[str, str]) -> httpx.Response:
            await start.wait()
            return await client.post(f"/v1/signing-requests/{request_id}/signature", json=body)

        tasks = [asyncio.create_task(one(body)) for body in bodies]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


async def test_fifty_right_submissions_give_exactly_one_signature(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    workers: int,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    server = start_server(workers=workers)
    request_id, otp = open_request(server, key, person, sink)

    answers = await submit_all(server, key, request_id, [{"otp": otp, "pin": person.pin}] * 50)

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 409: 49}, statuses
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"otp_consumed"}
    # /metrics sums every worker process: one signature, 49 refusals, whichever worker answers.
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'roamsign_signatures_total{signature_format="cms"} 1.0' in metrics
    assert 'roamsign_failures_total{code="otp_consumed"} 49.0' in metrics
    with sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Signature).where(Signature.request_id == request_id)
        )
        assert count == 1


async def test_two_hundred_wrong_guesses_count_exactly_three(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    workers: int,
    sessions: sessionmaker[Session],
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    server = start_server(workers=workers)
    request_id, otp = open_request(server, key, person, sink)
    guesses = [f"{(int(otp) + n) % 1_000_000:06d}" for n in range(1, 201)]

    answers = await submit_all(
        server, key, request_id, [{"otp": g, "pin": person.pin} for g in guesses]
    )

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {403: 3, 423: 197}, statuses
    remaining = sorted(a.json()["attempts_remaining"] for a in answers if a.status_code == 403)
    assert remaining == [0, 1, 2]
    with sessions() as session:
        request = session.get(SigningRequest, request_id)
        assert request is not None and request.attempts == 3 and request.status == "locked"
    with server.client(key) as client:
        right = client.post(
            f"/v1/signing-requests/{request_id}/signature", json={"otp": otp, "pin": person.pin}
        )
    assert right.status_code == 423 and right.json()["code"] == "request_locked"
