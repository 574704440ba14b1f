"""The round trips of a signing flow, counted as PostgreSQL's statement log counts them.

Issue 19's budget: an e-mail flow (OTP request, the OTP e-mail's delivery, the signature, the
signing notice's delivery) in at most 12 statements, a device flow (request, inbox fetch,
signature) in at most 15: every statement, BEGIN, COMMIT and the pool's ping included. The
server's own log (`log_statement = all`, set on this engine's connections only) is the
referee: psycopg sends BEGIN and the pool its ping below SQLAlchemy's cursor events.

Deliveries run as the server's delivery loop runs them for a message queued in its own
process: the courier hands the claim over in memory and one pass sends it.
"""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.secrets import api_key_hash
from app.db import NotificationListener, connect_arguments, make_engine, make_sessionmaker
from app.runtime import Runtime
from app.services.audit.log import DEFAULT_CHAINS, chain_for
from app.services.mail.courier import COURIER_KEY
from app.services.mail.delivery import DeliveryWorker
from tests.api.conftest import Keys, bearer, request_otp
from tests.conftest import Cli
from tests.factories import Factory, Person
from tests.helpers import otp_from_message
from tests.pg_server import TemporaryPostgres

pytestmark = pytest.mark.postgres_only

# Issue 19's budgets, both reached: an e-mail flow in 12, a device flow in 15 (its signing
# notice's delivery counted too; the inbox fetch is BEGIN, the device with its person and its
# claimed messages, the nonce with the marks and the audit event, COMMIT).
EMAIL_FLOW_REACHED = 12
DEVICE_FLOW_REACHED = 15

# A log entry starts with "<time> [<pid>] "; a logged statement is "LOG:  statement: BEGIN"
# (simple protocol) or "LOG:  execute <name>: SELECT ..." (extended protocol), its text
# continued on the lines that follow.
_ENTRY = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] ")
_STATEMENT = re.compile(r"LOG:  (?:statement|execute [^:]*): (.*)$")


class StatementLog:
    """The statements the server logged since `mark()`, one string each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        # Background connections (a LISTEN for API key changes) are no part of a flow.
        self._listeners: set[str] = set()

    def mark(self) -> None:
        self._offset = self.path.stat().st_size

    def since_mark(self) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self._offset)
            text = log.read().decode(errors="replace")
        self.mark()
        statements: list[tuple[str, list[str]]] = []
        in_statement = False
        for line in text.splitlines():
            entry = _ENTRY.match(line)
            if entry is None:
                if in_statement:
                    statements[-1][1].append(line)
                continue
            statement = _STATEMENT.match(line, entry.end())
            in_statement = statement is not None
            if statement is not None:
                if statement.group(1).startswith("LISTEN"):
                    self._listeners.add(entry.group(1))
                statements.append((entry.group(1), [statement.group(1)]))
        return [
            " ".join(" ".join(lines).split())
            for pid, lines in statements
            if pid not in self._listeners
        ]


@dataclass
class Flow:
    """Each call of a flow and the statements it made."""

    calls: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(statements) for _, statements in self.calls)

    def breakdown(self) -> str:
        lines = []
        for call, statements in self.calls:
            lines.append(f"{call}: {len(statements)}")
            lines.extend(f"    {statement[:110]}" for statement in statements)
        return "\n".join([*lines, f"total: {self.total}"])


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: bytes, from_addr: str, to_addrs: Any) -> None:
        parsed = email.message_from_bytes(message, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.sent.append(parsed)

    def close(self) -> None:
        pass


@pytest.fixture
async def statement_log(
    postgres_server: TemporaryPostgres | None, runtime: Runtime, database_url: str
) -> AsyncIterator[StatementLog]:
    """The runtime on an engine whose connections log every statement (only this engine's)."""
    assert postgres_server is not None
    options = quote("-c log_statement=all")
    engine = make_engine(f"{database_url}?options={options}")
    original = runtime.engine, runtime.sessions
    runtime.engine = engine
    runtime.sessions = make_sessionmaker(engine, info={COURIER_KEY: runtime.courier})
    runtime.courier.bind(asyncio.get_running_loop())
    # A running server has written on every audit chain (its first event creates the head):
    # one event on each, by this process, as when it is the only one serving.
    targets = {chain_for(str(n), DEFAULT_CHAINS): str(n) for n in range(1000)}
    assert len(targets) == DEFAULT_CHAINS
    for target in targets.values():
        with runtime.sessions.begin() as session:  # a transaction's events share one chain
            runtime.audit_log(session).record(
                now=runtime.clock.now(), action="test.warm", actor="test", target_id=target
            )
    log = StatementLog(postgres_server.log_path)
    yield log
    runtime.courier.unbind()
    runtime.engine, runtime.sessions = original
    engine.dispose()


def delivery_worker(
    runtime: Runtime, sessions: sessionmaker[Session]
) -> tuple[DeliveryWorker, RecordingTransport]:
    transport = RecordingTransport()
    worker = DeliveryWorker(
        sessions,
        runtime.keys.outbox_seal,
        transport,
        runtime.clock,
        runtime.settings,
        audit=runtime.audit_log,
    )
    return worker, transport


async def deliver_handed(runtime: Runtime, worker: DeliveryWorker) -> int:
    """One pass of the delivery loop over what the courier carries, as the server runs it."""
    await asyncio.sleep(0)  # the hand-over is scheduled on the loop (call_soon_threadsafe)
    handed = runtime.courier.take(4)
    report = await asyncio.to_thread(worker.deliver_due, 4, handed, claim_database=False)
    return report.sent


async def email_flow(
    client: httpx.AsyncClient, runtime: Runtime, key: str, person: Person, log: StatementLog
) -> Flow:
    flow = Flow()
    worker, transport = delivery_worker(runtime, runtime.sessions)
    log.mark()
    created = await request_otp(client, key, person, document="round trips")
    assert created.status_code == 201, created.text
    flow.calls.append(("POST /v1/signing-requests", log.since_mark()))
    assert await deliver_handed(runtime, worker) == 1
    flow.calls.append(("delivery: the OTP e-mail", log.since_mark()))
    otp = otp_from_message(transport.sent[0])
    signed = await client.post(
        f"/v1/signing-requests/{created.json()['id']}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(key),
    )
    assert signed.status_code == 201, signed.text
    flow.calls.append(("POST .../signature", log.since_mark()))
    assert await deliver_handed(runtime, worker) == 1
    flow.calls.append(("delivery: the signing notice", log.since_mark()))
    return flow


async def device_flow(
    client: httpx.AsyncClient,
    runtime: Runtime,
    key: str,
    person: Person,
    factory: Factory,
    log: StatementLog,
) -> Flow:
    flow = Flow()
    app = factory.mobile_device(person)
    worker, _transport = delivery_worker(runtime, runtime.sessions)
    await deliver_handed(runtime, worker)  # what the device's activation sent
    log.mark()
    created = await request_otp(client, key, person, channel="mobile", document="device")
    assert created.status_code == 201, created.text
    flow.calls.append(("POST /v1/signing-requests (mobile)", log.since_mark()))
    fetched = await client.send(app.fetch_request(client, created=runtime.clock.now()))
    assert fetched.status_code == 200, fetched.text
    flow.calls.append(("GET /v1/devices/{id}/messages", log.since_mark()))
    [message] = fetched.json()["messages"]
    signed = await client.post(
        f"/v1/signing-requests/{created.json()['id']}/signature",
        json={"otp": message["otp"], "pin": person.pin},
        headers=bearer(key),
    )
    assert signed.status_code == 201, signed.text
    flow.calls.append(("POST .../signature", log.since_mark()))
    assert await deliver_handed(runtime, worker) == 1
    flow.calls.append(("delivery: the signing notice", log.since_mark()))
    return flow


async def listening_for_key_changes(runtime: Runtime) -> None:
    assert runtime.api_key_cache() is not None
    for _ in range(500):
        if runtime.api_keys.listening():
            return
        await asyncio.sleep(0.01)  # a thread connecting: nothing here to advance instead
    raise AssertionError("not listening for API key changes")


async def test_a_flow_stays_within_its_round_trips(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    runtime: Runtime,
    statement_log: StatementLog,
) -> None:
    # A first flow warms what a running server has warm (the audit chains' heads, the CA, the
    # verified API key, once the process listens for key changes).
    await email_flow(client, runtime, api_keys.signer, factory.person(), statement_log)
    await listening_for_key_changes(runtime)
    await email_flow(client, runtime, api_keys.signer, factory.person(), statement_log)
    mailed = await email_flow(client, runtime, api_keys.signer, factory.person(), statement_log)
    mobile = await device_flow(
        client, runtime, api_keys.signer, factory.person(), factory, statement_log
    )
    print("e-mail flow:", mailed.breakdown(), "device flow:", mobile.breakdown(), sep="\n")
    assert mailed.total <= EMAIL_FLOW_REACHED, mailed.breakdown()
    assert mobile.total <= DEVICE_FLOW_REACHED, mobile.breakdown()


async def test_a_connection_the_server_closed_is_replaced_without_a_ping(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    runtime: Runtime,
    postgres_server: TemporaryPostgres | None,
) -> None:
    """No pre-ping: the pool must still never hand out a connection the server has closed."""
    assert postgres_server is not None
    person = factory.person()
    assert (await request_otp(client, api_keys.signer, person)).status_code == 201
    assert runtime.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    with psycopg.connect(postgres_server.libpq_dsn(), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    again = await request_otp(client, api_keys.signer, person, document="after the restart")
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("change", ["revoke", "rotate"])
async def test_a_key_another_process_changes_is_refused_at_once(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    runtime: Runtime,
    cli: Cli,
    change: str,
) -> None:
    """Verified keys are cached per process; the CLI's commit tells every process (NOTIFY)."""
    person = factory.person()
    assert (await request_otp(client, api_keys.signer, person)).status_code == 201
    await listening_for_key_changes(runtime)
    assert (await request_otp(client, api_keys.signer, person, document="2")).status_code == 201
    cached, _generation = runtime.api_keys.get(api_key_hash(api_keys.signer))
    assert cached is not None and cached.name == "igfmas"

    cli("clients", change, "igfmas")
    refused = await request_otp(client, api_keys.signer, person, document="3")
    assert refused.status_code == 401, refused.text
    assert runtime.api_keys.get(api_key_hash(api_keys.signer))[0] is None


def test_a_listener_stops_without_waiting_out_its_check(runtime: Runtime) -> None:
    """Stopping wakes the listener's wait for a notification (a stopping process, and every
    test's runtime, waited up to the check interval: 2 s a test on PostgreSQL)."""
    changes: list[None] = []
    listener = NotificationListener(
        connect_arguments(runtime.engine),
        "roamsign_test_wake",
        lambda: changes.append(None),
        check_seconds=600,
    )
    listener.start()
    assert listener.wait_listening(timeout=30)
    listener.stop()
    assert listener._thread is not None and not listener._thread.is_alive()
