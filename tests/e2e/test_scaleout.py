"""One OTP, one signature across hosts: two `python -m app serve` processes, each in a network
namespace of its own, on one PostgreSQL in a third (tests/netns.py), and every OTP submitted to
both hosts at the same instant. `make bench-scaleout` measures the same cluster's flow rate.

It makes namespaces, so it needs root (as CI and `make test` run); elsewhere it is skipped and
says why. PostgreSQL pass only: hosts share a database server, which SQLite is not.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from app.clock import SystemClock
from app.migrate import upgrade
from app.models import Signature, SigningRequest
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from app.settings import Settings, write_master_key
from tests.factories import Factory, Person
from tests.harness import Server, serve_environment
from tests.helpers import document_hash, otp_from_message
from tests.netns import (
    RELAY_PORT,
    NamespacedPostgres,
    Network,
    netns_unavailable,
    serve_in,
    start_relay,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres_only,
    pytest.mark.skipif(
        netns_unavailable() is not None,
        reason=f"cannot make network namespaces: {netns_unavailable()}",
    ),
]

OTPS = 40
AT_ONCE = 8  # OTPs raced together
COPIES = 2  # submissions of each OTP to each host


@dataclass
class Cluster:
    hosts: list[Server]
    sink: MailSink
    key: str
    people: list[Person]
    database_url: str


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    network = Network("rstest", "10.213.8", hosts=2)
    with tempfile.TemporaryDirectory(prefix="roamsign-scaleout-test-") as tmp:
        directory = Path(tmp)
        pg = NamespacedPostgres(network)
        sink = MailSink(None, host=network.generator_address)
        hosts: list[Server] = []
        relays: list[subprocess.Popen[bytes]] = []
        try:
            network.create()
            pg.start()
            upgrade(pg.url)
            sink.start()
            relays.extend(
                start_relay(network, n, (network.generator_address, sink.port)) for n in (1, 2)
            )
            key_file = directory / "master.key"
            write_master_key(key_file, secrets.token_bytes(32))
            settings = Settings(
                profile="production",
                database_url=pg.url,
                master_key_file=key_file,
                var_dir=directory,
                smtp_port=RELAY_PORT,
            )
            runtime = Runtime.build(settings, SystemClock())
            try:
                factory = Factory(runtime)
                factory.init_ca()
                key = factory.client("igfmas", "signer")
                people = [factory.person() for _ in range(AT_ONCE)]
            finally:
                runtime.close()
            env = serve_environment(
                database_url=pg.url,
                key_file=key_file,
                var_dir=directory,
                smtp_port=RELAY_PORT,
                ROAMSIGN_OTPS_PER_PERSON_PER_MINUTE="1000",
                ROAMSIGN_OTPS_PER_SIGNER_PERSON_PER_MINUTE="1000",
            )
            started: dict[int, Server | BaseException] = {}

            def start(n: int) -> None:
                try:
                    started[n] = serve_in(network, n, env, directory, ready_seconds=45)
                except BaseException as exc:
                    started[n] = exc

            threads = [threading.Thread(target=start, args=(n,)) for n in (1, 2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for n in (1, 2):
                outcome = started[n]
                if isinstance(outcome, BaseException):
                    raise outcome
                hosts.append(outcome)
            yield Cluster(hosts, sink, key, people, pg.url)
        finally:
            for server in hosts:
                server.stop()
            for relay in relays:
                relay.kill()
                relay.wait()
            sink.stop()
            pg.stop()
            network.remove()


def open_request(cluster: Cluster, host: Server, person: Person) -> tuple[str, str]:
    with host.client(cluster.key) as client:
        created = client.post(
            "/v1/signing-requests",
            json={
                "mykad": person.mykad,
                "document_hash": document_hash(f"PV-{uuid.uuid4()}"),
                "document_name": "PV",
            },
        )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    message = cluster.sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == request_id, timeout=20)
    return request_id, otp_from_message(message)


async def race(
    cluster: Cluster, opened: list[tuple[str, str, Person]]
) -> list[list[tuple[int, httpx.Response]]]:
    """Every OTP to both hosts, COPIES times each, all released at once; answers per OTP."""
    go = asyncio.Event()
    headers = {"Authorization": f"Bearer {cluster.key}"}
    limits = httpx.Limits(max_connections=AT_ONCE * COPIES)
    clients = [
        httpx.AsyncClient(base_url=host.url, headers=headers, timeout=60, limits=limits)
        for host in cluster.hosts
    ]
    try:

        async def submit(n: int, request_id: str, otp: str, pin: str) -> tuple[int, httpx.Response]:
            await go.wait()
            path = f"/v1/signing-requests/{request_id}/signature"
            return n, await clients[n].post(path, json={"otp": otp, "pin": pin})

        # Whose submissions are made first alternates, so neither host is favoured.
        orders = [(0, 1), (1, 0)]
        batches = [
            [
                asyncio.create_task(submit(n, request_id, otp, person.pin))
                for n in orders[index % 2]
                for _ in range(COPIES)
            ]
            for index, (request_id, otp, person) in enumerate(opened)
        ]
        await asyncio.sleep(0)
        go.set()
        return [list(await asyncio.gather(*tasks)) for tasks in batches]
    finally:
        for client in clients:
            await client.aclose()


async def test_each_otp_signs_once_whichever_host_gets_it(cluster: Cluster) -> None:
    winners: Counter[int] = Counter()
    signed_ids: list[str] = []
    for round_number in range(OTPS // AT_ONCE):
        opened = [
            (*open_request(cluster, cluster.hosts[(round_number + i) % 2], person), person)
            for i, person in enumerate(cluster.people)
        ]
        for (request_id, _otp, _person), answers in zip(
            opened, await race(cluster, opened), strict=True
        ):
            kinds = Counter(answer.status_code for _, answer in answers)
            assert kinds == {201: 1, 409: 2 * COPIES - 1}, (request_id, kinds)
            refused = {answer.json()["code"] for _, answer in answers if answer.status_code == 409}
            assert refused == {"otp_consumed"}
            winners.update(n for n, answer in answers if answer.status_code == 201)
            signed_ids.append(request_id)

    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as db:
            rows = dict(
                db.execute(
                    select(Signature.request_id, func.count()).group_by(Signature.request_id)
                ).all()
            )
            statuses = Counter(db.scalars(select(SigningRequest.status)).all())
    finally:
        engine.dispose()
    assert rows == dict.fromkeys(signed_ids, 1)
    assert statuses == {"signed": OTPS}
    # Both hosts took part: each won some of the races (40 races, about even in practice).
    assert set(winners) == {0, 1}, winners
