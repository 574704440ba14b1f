"""The OTP limit per person holds across processes: two servers (as on two hosts), one PostgreSQL.

Two single-worker servers rather than one server with two workers: the kernel decides which
worker accepts a connection, so only separate servers make sure that both processes count.
(Resends past their daily limit, across processes: tests/e2e/test_lifecycle_races.py.)
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.e2e.conftest import Call, ServerStarter, at_once
from tests.factories import Factory
from tests.helpers import document_hash

pytestmark = pytest.mark.postgres_only


async def test_five_otps_a_minute_per_person_across_two_server_processes(
    start_server: ServerStarter, e2e_factory: Factory
) -> None:
    person = e2e_factory.person()
    signer = e2e_factory.client("igfmas", "signer")
    servers = [
        start_server(
            ROAMSIGN_OTPS_PER_PERSON_PER_MINUTE="5", ROAMSIGN_OTPS_PER_SIGNER_PERSON_PER_MINUTE="5"
        )
        for _ in range(2)
    ]
    # Twelve OTPs for one person, each for its own document, at once, six on each server.
    calls: list[Call] = [
        (
            "POST",
            "/v1/signing-requests",
            {
                "mykad": person.mykad,
                "document_hash": document_hash(f"PV-2026-{i:06d}"),
                "document_name": f"Baucar Bayaran PV-2026-{i:06d}",
            },
        )
        for i in range(12)
    ]
    answers = await asyncio.gather(
        at_once(servers[0], signer, calls[0::2]), at_once(servers[1], signer, calls[1::2])
    )
    by_server = [Counter(answer.status_code for answer in server) for server in answers]
    assert by_server[0] + by_server[1] == Counter({201: 5, 429: 7}), by_server


async def test_a_flood_from_one_signer_never_fails_another_signers_requests(
    start_server: ServerStarter, e2e_factory: Factory
) -> None:
    """One signer asks 100 times for one person while another asks twice, all at once, across
    two servers: the flooder gets its 3, the other signer both of its 2."""
    person = e2e_factory.person()
    flooder = e2e_factory.client("leaked", "signer")
    signer = e2e_factory.client("igfmas", "signer")
    servers = [start_server() for _ in range(2)]

    def calls(prefix: str, count: int) -> list[Call]:
        return [
            (
                "POST",
                "/v1/signing-requests",
                {
                    "mykad": person.mykad,
                    "document_hash": document_hash(f"{prefix}-{i}"),
                    "document_name": f"{prefix} {i}",
                },
            )
            for i in range(count)
        ]

    flood, real = calls("flood", 100), calls("real", 2)
    answers = await asyncio.gather(
        at_once(servers[0], flooder, flood[0::2]),
        at_once(servers[1], flooder, flood[1::2]),
        at_once(servers[0], signer, real[:1]),
        at_once(servers[1], signer, real[1:]),
    )
    flooded = Counter(a.status_code for a in answers[0] + answers[1])
    assert flooded == Counter({201: 3, 429: 97}), flooded
    assert [a.status_code for a in answers[2] + answers[3]] == [201, 201]
