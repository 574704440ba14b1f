"""A warm process runs a signing flow's statements from its caches, compiling none of them.

SQLAlchemy caches a statement's compiled form under its cache key; a construct without one (a
multi-row `insert().values([...])`, for instance) is compiled again on every execution, which
cost more CPU than running it (issue 19: 7 % of a worker's). On PostgreSQL, psycopg caches the
conversion of a statement's `%(name)s` parameters only up to a length and a number of
parameters; past either it parses the whole text again on every execution (2 % of a worker's,
for the audit write of the OTP request). And a statement with an expanding IN list or a
`literal_execute` value is rendered again at each execution (1 %).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from psycopg import _queries
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.default import CACHE_HIT, DefaultExecutionContext

from app.db import make_sessionmaker
from app.runtime import Runtime
from app.services.mail.courier import COURIER_KEY
from tests.api.conftest import Keys, bearer, request_otp
from tests.api.test_round_trips import deliver_handed, delivery_worker
from tests.factories import Factory
from tests.helpers import otp_from_message

# psycopg's own limits (a private module: this fails if they move, rather than the flow
# silently falling back to parsing every statement).
MAX_LENGTH = _queries.MAX_CACHED_STATEMENT_LENGTH
MAX_PARAMETERS = _queries.MAX_CACHED_STATEMENT_PARAMS


@dataclass
class Sent:
    statement: str
    parameters: int
    cache_hit: bool
    rendered_per_execution: bool  # expanding IN lists, literal_execute binds

    def __str__(self) -> str:
        statement = " ".join(self.statement.split())[:150]
        return f"{len(self.statement)} chars, {self.parameters} parameters: {statement}"


@dataclass
class Executed:
    sent: list[Sent] = field(default_factory=list)


@pytest.fixture
def executed(runtime: Runtime) -> Iterator[Executed]:
    """Every compiled statement the engine sends (not driver SQL such as SQLite's BEGIN)."""
    seen = Executed()

    def before_cursor_execute(
        _connection: Connection,
        _cursor: Any,
        statement: str,
        parameters: Any,
        context: DefaultExecutionContext | None,
        _many: bool,
    ) -> None:
        if context is None or context.compiled is None:
            return
        count = len(parameters) if isinstance(parameters, dict | list | tuple) else 0
        compiled = context.compiled
        rendered = bool(compiled.literal_execute_params or compiled.post_compile_params)
        seen.sent.append(Sent(statement, count, context.cache_hit == CACHE_HIT, rendered))

    event.listen(runtime.engine, "before_cursor_execute", before_cursor_execute)
    yield seen
    event.remove(runtime.engine, "before_cursor_execute", before_cursor_execute)


async def test_a_warm_flow_compiles_and_parses_no_statement(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    runtime: Runtime,
    executed: Executed,
) -> None:
    # The server's sessions hand a queued message to its delivery loop (the courier).
    runtime.sessions = make_sessionmaker(runtime.engine, info={COURIER_KEY: runtime.courier})
    runtime.courier.bind(asyncio.get_running_loop())
    people = [factory.person() for _ in range(3)]
    try:
        for person in people:  # the first two warm the caches
            executed.sent.clear()
            worker, transport = delivery_worker(runtime, runtime.sessions)
            created = await request_otp(client, api_keys.signer, person, document="hot")
            assert created.status_code == 201, created.text
            assert await deliver_handed(runtime, worker) == 1
            signed = await client.post(
                f"/v1/signing-requests/{created.json()['id']}/signature",
                json={"otp": otp_from_message(transport.sent[0]), "pin": person.pin},
                headers=bearer(api_keys.signer),
            )
            assert signed.status_code == 201, signed.text
            assert await deliver_handed(runtime, worker) == 1
    finally:
        runtime.courier.unbind()
    assert executed.sent
    compiled = [str(sent) for sent in executed.sent if not sent.cache_hit]
    assert compiled == []
    rendered = [str(sent) for sent in executed.sent if sent.rendered_per_execution]
    assert rendered == []
    if runtime.engine.dialect.name == "postgresql":
        parsed = [
            str(sent)
            for sent in executed.sent
            if len(sent.statement) > MAX_LENGTH or sent.parameters > MAX_PARAMETERS
        ]
        assert parsed == []
