"""The server of `bench/floor.py`: a signing flow's HTTP, database and e-mail work, and none of
roamsign's own. `uvicorn bench.floor_server:build --factory`, from the project's root,
configured by the environment:

- `FLOOR_LAYER`: `http`, `database` or `mail`, each doing what the one before does and more;
- `FLOOR_DATABASE_URL`: a PostgreSQL database prepared by `create_tables` (`database`, `mail`);
- `FLOOR_SMTP_PORT`: the load generator's SMTP sink on 127.0.0.1 (`mail`).

A flow's two calls, `POST /create` and `POST /sign/{id}`, do what roamsign's do around its own
work (`app.deps.in_one_unit`): read and parse the JSON body, wait for a database slot, hop to a
worker thread, run one unit of work there and answer JSON (`http` stops at the hop). The unit
of work runs the statements roamsign's call runs on PostgreSQL, in the same order, on tables of
the same shape, through SQLAlchemy and psycopg with roamsign's pool settings (pre-ping
included): see `CREATE` and `SIGN`. Nothing is computed: no key derivation, no MAC, no
signature, no e-mail rendering or sealing, no validation beyond the JSON. With `mail`, each
commit hands its e-mail (the OTP, then the signing notice) to delivery threads, four a process
as roamsign's loops, which send it over a persistent SMTP connection each and record what a
pass sent in one transaction: one UPDATE for the batch, the chain head's lock, an audit row per
message (`app.services.mail.delivery`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import queue
import secrets
import smtplib
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine, TextClause, create_engine, text
from starlette.concurrency import run_in_threadpool

LAYERS = ("http", "database", "mail")
POOL_SIZE = 20  # roamsign's default (ROAMSIGN_DATABASE_POOL_SIZE)
DELIVERY_THREADS = 4  # roamsign's default (ROAMSIGN_DELIVERY_CONCURRENCY)
DELIVERY_BATCH = 4
AUDIT_CHAINS = 16  # app.services.audit.log.DEFAULT_CHAINS
SIGNER_SHARDS = 16  # app.services.signing.service.SIGNER_COUNTER_SHARDS
SIGNER_KEY = "floor-signer"
# As large as what roamsign stores: a sealed e-mail, a detached CMS signature (P-256).
SEALED_MESSAGE_BYTES = 1_400
SIGNATURE_BYTES = 900
MAC = "0" * 64

TABLES = """
CREATE TABLE floor_clients (key_hash text PRIMARY KEY, id text NOT NULL, name text NOT NULL,
    role text NOT NULL, agency text);
CREATE TABLE floor_people (mykad text PRIMARY KEY, id text NOT NULL UNIQUE, name text NOT NULL,
    email text NOT NULL, credential_id text NOT NULL);
CREATE TABLE floor_counts (key text, bucket bigint, shard int, count int NOT NULL,
    expires_at timestamptz NOT NULL, PRIMARY KEY (key, bucket, shard));
CREATE TABLE floor_requests (id text PRIMARY KEY, signer_id text NOT NULL,
    person_id text NOT NULL, document_hash text NOT NULL, document_name text NOT NULL,
    status text NOT NULL, attempts int NOT NULL, otp_mac text NOT NULL,
    created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, finished_at timestamptz);
CREATE UNIQUE INDEX floor_requests_pending ON floor_requests (person_id, document_hash)
    WHERE status = 'pending';
CREATE TABLE floor_outbox (id text PRIMARY KEY, purpose text NOT NULL, request_id text,
    recipient text NOT NULL, message bytea, status text NOT NULL, attempts int NOT NULL,
    created_at timestamptz NOT NULL, lease_until timestamptz);
CREATE TABLE floor_signatures (id text PRIMARY KEY, request_id text NOT NULL UNIQUE,
    signature bytea NOT NULL, signed_at timestamptz NOT NULL);
CREATE TABLE floor_heads (chain int PRIMARY KEY, seq bigint NOT NULL, mac text NOT NULL);
CREATE TABLE floor_events (chain int, seq bigint, occurred_at timestamptz NOT NULL,
    action text NOT NULL, actor text NOT NULL, target_id text, details text NOT NULL,
    mac text NOT NULL, PRIMARY KEY (chain, seq));
"""

# The statements of roamsign's OTP request on PostgreSQL (after the pool's pre-ping and
# psycopg's BEGIN): the API key, the person with their credential, the signer's advisory lock,
# the two rate counters (one executemany), their sums, stale requests expired, the request,
# its e-mail, the audit chain's head, the audit event moving it (one statement).
_CLIENT = text("SELECT id, name, role, agency FROM floor_clients WHERE key_hash = :key_hash")
_PERSON = text("SELECT id, name, email, credential_id FROM floor_people WHERE mykad = :mykad")
_LOCK = text("SELECT pg_advisory_xact_lock(:lock)")
_COUNT = text(
    "INSERT INTO floor_counts (key, bucket, shard, count, expires_at) "
    "VALUES (:key, :bucket, :shard, 1, :expires_at) ON CONFLICT (key, bucket, shard) "
    "DO UPDATE SET count = floor_counts.count + 1"
)
_SUMS = text(
    "SELECT key, sum(count) FROM floor_counts WHERE key IN (:person_key, :signer_key) "
    "AND bucket >= :since GROUP BY key"
)
_EXPIRE_STALE = text(
    "UPDATE floor_requests SET status = 'expired', finished_at = :now WHERE person_id = :person "
    "AND document_hash = :document_hash AND status = 'pending' AND expires_at <= :now"
)
_NEW_REQUEST = text(
    "INSERT INTO floor_requests (id, signer_id, person_id, document_hash, document_name, status,"
    " attempts, otp_mac, created_at, expires_at) VALUES (:id, :signer_id, :person, "
    ":document_hash, :document_name, 'pending', 0, :otp_mac, :now, :expires_at)"
)
_NEW_MESSAGE = text(
    "INSERT INTO floor_outbox (id, purpose, request_id, recipient, message, status, attempts, "
    "created_at, lease_until) VALUES (:id, :purpose, :request_id, :recipient, :message, "
    "'sending', 1, :now, :lease_until)"
)
_HEAD = text("SELECT seq, mac FROM floor_heads WHERE chain = :chain FOR UPDATE")
_EVENT = text(
    "WITH moved AS (UPDATE floor_heads SET seq = :seq, mac = :mac WHERE chain = :chain) "
    "INSERT INTO floor_events (chain, seq, occurred_at, action, actor, target_id, details, mac) "
    "VALUES (:chain, :seq, :now, :action, :actor, :target_id, :details, :mac)"
)
# The signature's: the API key, the request with its person, the attempt counted, the OTP
# spent, the signature, the signing notice, the chain's head, the audit event.
_REQUEST = text(
    "SELECT r.id, r.status, r.attempts, r.otp_mac, r.expires_at, p.email, p.credential_id "
    "FROM floor_requests r JOIN floor_people p ON p.id = r.person_id WHERE r.id = :id"
)
_COUNT_ATTEMPT = text(
    "UPDATE floor_requests SET attempts = attempts + 1 WHERE id = :id AND status = 'pending' "
    "AND attempts < 3 RETURNING attempts"
)
_SPEND = text(
    "UPDATE floor_requests SET status = 'signed', finished_at = :now WHERE id = :id "
    "AND status = 'pending'"
)
_NEW_SIGNATURE = text(
    "INSERT INTO floor_signatures (id, request_id, signature, signed_at) "
    "VALUES (:id, :request_id, :signature, :now)"
)
# A delivery pass's record: the batch marked sent, then an audit event per message.
_SENT = text(
    "UPDATE floor_outbox SET status = 'sent', message = NULL, lease_until = NULL WHERE id = :id"
)


# ------------------------------------------------------------------------ the statement shape
#
# What each call's unit of work sends PostgreSQL, in order: one `Step` per round trip (an
# executemany of psycopg counts as one: it pipelines). To follow roamsign to a new shape, edit
# these two tuples (add, drop, reorder steps; a new statement is a `text()` above) and
# `PRE_PING`; `python -m bench.floor_server` prints the shape and its round trips, and
# `bench/floor.py` prints the same count beside its figures. The counts are roamsign's, as
# PostgreSQL's statement log shows them (`log_statement = all`): see bench/README.md.

PRE_PING = True  # roamsign's pool pings a connection before lending it (one round trip)
Call = dict[str, Any]  # what the call knows: its arguments, then each step's `keep`
Params = dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One statement of a call: its parameters from what the call knows so far, and under
    which name (`keep`) the call keeps its first row (`fetch="one"`) or all rows (`"all"`)."""

    name: str
    statement: TextClause
    params: Callable[[Call], Params]
    fetch: str | None = None
    keep: str | None = None


def run_shape(db: Connection, shape: Sequence[Step], call: Call) -> None:
    for step in shape:
        result = db.execute(step.statement, step.params(call))
        if step.fetch == "one":
            row = result.one()
            if step.keep:
                call[step.keep] = row
        elif step.fetch == "all":
            rows = result.all()
            if step.keep:
                call[step.keep] = rows


def round_trips(shape: Sequence[Step]) -> int:
    """The call's round trips: its steps, the pool's ping, BEGIN and COMMIT."""
    return len(shape) + (1 if PRE_PING else 0) + 2


def _person_key(call: Call) -> str:
    return f"person:{call['person'].id}"


def _counts(call: Call) -> list[dict[str, Any]]:
    # The person's counter is one row, locked until the commit; the signer's is sharded.
    bucket = int(call["now"].timestamp()) // 60
    expires_at = call["now"] + timedelta(minutes=2)
    return [
        {"key": _person_key(call), "bucket": bucket, "shard": 0, "expires_at": expires_at},
        {
            "key": SIGNER_KEY,
            "bucket": bucket,
            "shard": secrets.randbelow(SIGNER_SHARDS),
            "expires_at": expires_at,
        },
    ]


def _outbox(call: Call, purpose: str, recipient: str) -> dict[str, Any]:
    """The call's e-mail (kept as `mail`, handed to delivery after the commit), as a row."""
    mail = _mail(call["request_id"], recipient, otp=purpose == "otp")
    call["mail"] = mail
    return {
        "id": mail.outbox_id,
        "purpose": purpose,
        "request_id": call["request_id"],
        "recipient": recipient,
        "message": secrets.token_bytes(SEALED_MESSAGE_BYTES),
        "now": call["now"],
        "lease_until": call["now"] + timedelta(seconds=60),
    }


def _head(call: Call) -> dict[str, Any]:
    call["chain"] = secrets.randbelow(AUDIT_CHAINS)
    return {"chain": call["chain"]}


def _event(action: str) -> Callable[[Call], Params]:
    def params(call: Call) -> Params:
        return {
            "chain": call["chain"],
            "seq": call["head"].seq + 1,
            "mac": MAC,
            "now": call["now"],
            "action": action,
            "actor": "floor",
            "target_id": call["request_id"],
            "details": '{"channel": "email"}',
        }

    return params


def _stale(call: Call) -> dict[str, Any]:
    body = call["body"]
    return {"person": call["person"].id, "document_hash": body["document_hash"], "now": call["now"]}


CREATE_SHAPE: tuple[Step, ...] = (
    Step("API key", _CLIENT, lambda c: {"key_hash": _key_hash(c["api_key"])}, "one"),
    Step("person", _PERSON, lambda c: {"mykad": c["body"]["mykad"]}, "one", keep="person"),
    Step("person's lock", _LOCK, lambda c: {"lock": int(_key_hash(_person_key(c))[:15], 16)}),
    Step("rate counters", _COUNT, _counts),
    Step(
        "rate sums",
        _SUMS,
        lambda c: {
            "person_key": _person_key(c),
            "signer_key": SIGNER_KEY,
            "since": int(c["now"].timestamp()) // 60 - 1,
        },
        "all",
    ),
    Step("stale requests expired", _EXPIRE_STALE, _stale),
    Step(
        "the request",
        _NEW_REQUEST,
        lambda c: {
            **_stale(c),
            "id": c["request_id"],
            "signer_id": "c1",
            "document_name": c["body"].get("document_name", ""),
            "otp_mac": MAC,
            "expires_at": c["now"] + timedelta(seconds=120),
        },
    ),
    Step("its OTP e-mail", _NEW_MESSAGE, lambda c: _outbox(c, "otp", c["person"].email)),
    Step("audit chain head", _HEAD, _head, "one", keep="head"),
    Step("audit event", _EVENT, _event("otp.issued")),
)

SIGN_SHAPE: tuple[Step, ...] = (
    Step("API key", _CLIENT, lambda c: {"key_hash": _key_hash(c["api_key"])}, "one"),
    Step("request and person", _REQUEST, lambda c: {"id": c["request_id"]}, "one", keep="request"),
    Step("attempt counted", _COUNT_ATTEMPT, lambda c: {"id": c["request_id"]}, "one"),
    Step("OTP spent", _SPEND, lambda c: {"id": c["request_id"], "now": c["now"]}),
    Step(
        "the signature",
        _NEW_SIGNATURE,
        lambda c: {
            "id": uuid.uuid4().hex,
            "request_id": c["request_id"],
            "signature": c["signature"],
            "now": c["now"],
        },
    ),
    Step(
        "its signing notice",
        _NEW_MESSAGE,
        lambda c: _outbox(c, "signing_notice", c["request"].email),
    ),
    Step("audit chain head", _HEAD, _head, "one", keep="head"),
    Step("audit event", _EVENT, _event("signature.created")),
)


def describe_shape() -> str:
    """The two calls' statements and round trips, as floor.py prints them."""
    lines = []
    for call, shape in (("OTP request", CREATE_SHAPE), ("signature", SIGN_SHAPE)):
        names = ", ".join(step.name for step in shape)
        ping = "ping, " if PRE_PING else ""
        lines.append(f"{call}: {round_trips(shape)} round trips ({ping}BEGIN, {names}, COMMIT)")
    return "\n".join(lines)


def create_tables(database_url: str, people: Sequence[str], api_key: str) -> None:
    """Empty tables for one layer's run: the API key, `people` (their MyKads), the heads."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "DROP TABLE IF EXISTS floor_clients, floor_people, floor_counts, floor_requests, "
            "floor_outbox, floor_signatures, floor_heads, floor_events"
        )
        connection.exec_driver_sql(TABLES)
        connection.execute(
            text("INSERT INTO floor_clients VALUES (:key_hash, 'c1', 'floor', 'signer', NULL)"),
            {"key_hash": _key_hash(api_key)},
        )
        connection.execute(
            text("INSERT INTO floor_people VALUES (:mykad, :id, 'Bench Person', :email, :cred)"),
            [
                {"mykad": mykad, "id": f"p{i}", "email": f"p{i}@example.gov.my", "cred": f"k{i}"}
                for i, mykad in enumerate(people)
            ],
        )
        connection.execute(
            text("INSERT INTO floor_heads VALUES (:chain, 0, :mac)"),
            [{"chain": chain, "mac": MAC} for chain in range(AUDIT_CHAINS)],
        )
    engine.dispose()


def _key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Mail:
    outbox_id: str
    recipient: str
    message: bytes
    otp: bool


def _mail(request_id: str, recipient: str, *, otp: bool) -> Mail:
    """An e-mail as large as roamsign's; an OTP carries the request id the sink keys on."""
    subject = "Your signing OTP" if otp else "A document was signed"
    headers = [
        "From: roamsign <noreply@example.gov.my>",
        f"To: {recipient}",
        f"Subject: {subject}",
        f"Message-ID: <{uuid.uuid4().hex}@floor>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if otp:
        headers.append(f"X-Roamsign-Request-Id: {request_id}")
    body = "A line of the notice's text, as long as roamsign's lines are.\n" * 10
    message = ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()
    return Mail(uuid.uuid4().hex, recipient, message, otp)


class Floor:
    """One worker process's engine, statements and delivery threads."""

    def __init__(self, layer: str, database_url: str | None, smtp_port: int | None) -> None:
        if layer not in LAYERS:
            raise ValueError(f"FLOOR_LAYER must be one of {LAYERS}")
        self.layer = layer
        self.engine: Engine | None = None
        if layer != "http":
            assert database_url is not None
            self.engine = create_engine(
                database_url, pool_size=POOL_SIZE, max_overflow=0, pool_pre_ping=PRE_PING
            )
        self.slots = asyncio.Semaphore(POOL_SIZE)
        self._smtp_port = smtp_port
        # OTPs before notices, as roamsign's courier and claim order them; None stops a thread.
        self._mail: queue.PriorityQueue[tuple[int, int, Mail | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.layer == "mail":
            for _ in range(DELIVERY_THREADS):
                thread = threading.Thread(target=self._deliver, daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        for _ in self._threads:
            self._mail.put((2, next(self._order), None))
        for thread in self._threads:
            thread.join(timeout=5)
        if self.engine is not None:
            self.engine.dispose()

    # ----------------------------------------------------------------- the two calls

    def create(self, api_key: str, body: dict[str, Any]) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        if self.engine is None:
            return {"id": request_id}
        now = datetime.now(UTC)
        call: Call = {"api_key": api_key, "body": body, "request_id": request_id, "now": now}
        with self.engine.begin() as db:
            run_shape(db, CREATE_SHAPE, call)
        self._hand_over(call["mail"])
        return {"id": request_id, "status": "pending", "expires_at": now.isoformat()}

    def sign(self, api_key: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        signature = secrets.token_bytes(SIGNATURE_BYTES)
        if self.engine is None:
            return {"id": request_id, "signature": signature.hex()}
        now = datetime.now(UTC)
        call: Call = {"api_key": api_key, "body": body, "request_id": request_id, "now": now}
        call["signature"] = signature
        with self.engine.begin() as db:
            run_shape(db, SIGN_SHAPE, call)
        self._hand_over(call["mail"])
        return {"id": request_id, "signature": signature.hex(), "signed_at": now.isoformat()}

    def _audit(
        self, db: Connection, action: str, target_id: str, now: datetime, count: int = 1
    ) -> None:
        chain = secrets.randbelow(AUDIT_CHAINS)
        seq = db.execute(_HEAD, {"chain": chain}).one().seq
        for _ in range(count):
            seq += 1
            db.execute(
                _EVENT,
                {
                    "chain": chain,
                    "seq": seq,
                    "mac": MAC,
                    "now": now,
                    "action": action,
                    "actor": "floor",
                    "target_id": target_id,
                    "details": '{"channel": "email"}',
                },
            )

    # ----------------------------------------------------------------- delivery

    def _hand_over(self, mail: Mail) -> None:
        if self.layer == "mail":
            self._mail.put((0 if mail.otp else 1, next(self._order), mail))

    def _deliver(self) -> None:
        assert self.engine is not None and self._smtp_port is not None
        smtp = smtplib.SMTP("127.0.0.1", self._smtp_port)
        while True:
            first = self._mail.get()[2]
            if first is None:
                break
            batch = [first]
            while len(batch) < DELIVERY_BATCH:
                try:
                    more = self._mail.get_nowait()[2]
                except queue.Empty:
                    break
                if more is None:
                    self._mail.put((2, next(self._order), None))  # for this thread's next look
                    break
                batch.append(more)
            for mail in batch:
                smtp.sendmail("noreply@example.gov.my", [mail.recipient], mail.message)
            now = datetime.now(UTC)
            with self.engine.begin() as db:
                db.execute(_SENT, [{"id": mail.outbox_id} for mail in batch])
                self._audit(db, "mail.delivered", batch[0].outbox_id, now, count=len(batch))
        smtp.quit()


def build() -> FastAPI:
    """The uvicorn factory (one per worker process)."""
    port = os.environ.get("FLOOR_SMTP_PORT")
    floor = Floor(
        os.environ["FLOOR_LAYER"],
        os.environ.get("FLOOR_DATABASE_URL"),
        int(port) if port else None,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        floor.start()
        yield
        await run_in_threadpool(floor.stop)

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/create")
    async def create(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        api_key = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with floor.slots:
            answer = await run_in_threadpool(floor.create, api_key, body)
        return JSONResponse(answer, status_code=201)

    @app.post("/sign/{request_id}")
    async def sign(request_id: str, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        api_key = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with floor.slots:
            answer = await run_in_threadpool(floor.sign, api_key, request_id, body)
        return JSONResponse(answer, status_code=201)

    return app


if __name__ == "__main__":
    print(describe_shape())
