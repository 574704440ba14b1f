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
the same shape, through SQLAlchemy and psycopg with roamsign's pool settings (no pre-ping):
see `CREATE_SHAPE` and `SIGN_SHAPE`. The API key is checked against a per-process cache (read
once per process), as roamsign's are. Nothing is computed: no key derivation, no MAC, no
signature, no e-mail rendering or sealing, no validation beyond the JSON. With `mail`, each
commit hands its e-mail (the OTP, then the signing notice) to delivery threads, four a process
as roamsign's loops, which send it over a persistent SMTP connection each and record each
message sent with its audit event in one autocommitted statement
(`app.services.mail.delivery`).
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

# The statements of roamsign's calls on PostgreSQL, as its statement log shows them (no API key
# statement: roamsign verifies keys from a per-process cache, kept fresh by LISTEN/NOTIFY).
# The OTP request: the person read with their stale requests expired (in its WITH) and their
# two rate-limit locks (in its select list); the rate counters' upsert with every limit's sum;
# then the taken count, the request and its e-mail written with the audit event that moves its
# chain's head from the head this process last wrote (a compare-and-set: nothing comes back
# when another process moved it since, and the head is then read under its lock and the
# statement sent again).
_PERSON = text(
    "WITH stale AS (UPDATE floor_requests SET status = 'expired', finished_at = :now "
    "WHERE person_id IN (SELECT id FROM floor_people WHERE mykad = :mykad) "
    "AND document_hash = :document_hash AND status = 'pending' AND expires_at <= :now) "
    "SELECT id, name, email, credential_id, pg_advisory_xact_lock(:lock_minute), "
    "pg_advisory_xact_lock(:lock_day) FROM floor_people WHERE mykad = :mykad"
)
_COUNTS_AND_SUMS = text(
    "WITH hits AS (INSERT INTO floor_counts (key, bucket, shard, count, expires_at) "
    "VALUES (:person_key, :bucket, 0, 1, :expires_at), "
    "(:signer_key, :bucket, :shard, 1, :expires_at) "
    "ON CONFLICT (key, bucket, shard) DO UPDATE SET count = floor_counts.count + 1 "
    "RETURNING key, bucket, count) "
    "SELECT key, bucket, sum(count) FROM floor_counts "
    "WHERE key IN (:person_key, :signer_key, :taken_key) AND bucket >= :since "
    "AND NOT (key = :person_key AND bucket = :bucket AND shard = 0 "
    "OR key = :signer_key AND bucket = :bucket AND shard = :shard) GROUP BY key, bucket "
    "UNION ALL SELECT key, bucket, count FROM hits"
)
# The head's compare-and-set, and what each write is guarded by (done only if it moved).
_MOVED = (
    "WITH moved AS (UPDATE floor_heads SET seq = :seq, mac = :mac WHERE chain = :chain "
    "AND seq = :previous_seq AND mac = :previous_mac RETURNING chain), "
)
_IF_MOVED = "WHERE EXISTS (SELECT 1 FROM moved)"
_EVENT_IF_MOVED = (
    "INSERT INTO floor_events (chain, seq, occurred_at, action, actor, target_id, details, mac) "
    "SELECT :chain, :seq, :now, :action, :actor, :target_id, :details, :mac FROM moved "
    "RETURNING seq"
)
_MESSAGE_IF_MOVED = (
    "mail AS (INSERT INTO floor_outbox (id, purpose, request_id, recipient, message, status, "
    "attempts, created_at, lease_until) SELECT :outbox_id, :purpose, :request_id, :recipient, "
    f"CAST(:message AS bytea), 'sending', 1, :now, :lease_until {_IF_MOVED}) "
)
_REQUEST_WITH_EVENT = text(
    _MOVED + "taken AS (INSERT INTO floor_counts (key, bucket, shard, count, expires_at) "
    f"SELECT :taken_key, :bucket, :shard, 1, :expires_at {_IF_MOVED} "
    "ON CONFLICT (key, bucket, shard) DO UPDATE SET count = floor_counts.count + 1), "
    "request AS (INSERT INTO floor_requests (id, signer_id, person_id, document_hash, "
    "document_name, status, attempts, otp_mac, created_at, expires_at) SELECT :request_id, "
    ":signer_id, :person, :document_hash, :document_name, 'pending', 0, :otp_mac, :now, "
    f":request_expires_at {_IF_MOVED}), " + _MESSAGE_IF_MOVED + _EVENT_IF_MOVED
)
_HEAD = text("SELECT seq, mac FROM floor_heads WHERE chain = :chain FOR UPDATE")
# The API key, read once per process (roamsign's cache; a revocation would clear it).
_CLIENT = text("SELECT id, name, role, agency FROM floor_clients WHERE key_hash = :key_hash")
# The signature's: the request with its person (locked), the attempt counted, then the OTP
# spent, the signature and the signing notice written with the audit event.
_REQUEST = text(
    "SELECT r.id, r.status, r.attempts, r.otp_mac, r.expires_at, p.email, p.credential_id "
    "FROM floor_requests r JOIN floor_people p ON p.id = r.person_id WHERE r.id = :id "
    "FOR NO KEY UPDATE OF p"
)
_COUNT_ATTEMPT = text(
    "UPDATE floor_requests SET attempts = attempts + 1 WHERE id = :id AND status = 'pending' "
    "AND attempts < 3 RETURNING attempts"
)
_SIGNED_WITH_EVENT = text(
    _MOVED + "spent AS (UPDATE floor_requests SET status = 'signed', finished_at = :now "
    f"WHERE id = :request_id AND status = 'pending' AND EXISTS (SELECT 1 FROM moved) "
    "RETURNING id), "
    "signature AS (INSERT INTO floor_signatures (id, request_id, signature, signed_at) "
    f"SELECT :signature_id, :request_id, CAST(:signature AS bytea), :now {_IF_MOVED}), "
    + _MESSAGE_IF_MOVED
    + _EVENT_IF_MOVED
)
# A delivery: the message marked sent with its audit event, one autocommitted statement.
_SENT_WITH_EVENT = text(
    _MOVED + "sent AS (UPDATE floor_outbox SET status = 'sent', message = NULL, lease_until = NULL "
    "WHERE id = :outbox_id AND EXISTS (SELECT 1 FROM moved)) " + _EVENT_IF_MOVED
)


# ------------------------------------------------------------------------ the statement shape
#
# What each call's unit of work sends PostgreSQL, in order: one `Step` per round trip (an
# executemany of psycopg counts as one: it pipelines). To follow roamsign to a new shape, edit
# these two tuples (add, drop, reorder steps; a new statement is a `text()` above) and
# `PRE_PING`; `python -m bench.floor_server` prints the shape and its round trips, and
# `bench/floor.py` prints the same count beside its figures. The counts are roamsign's, as
# PostgreSQL's statement log shows them (`log_statement = all`): see bench/README.md.

PRE_PING = False  # roamsign's pool has no ping (a closed socket is seen at checkout)
WRITE_ATTEMPTS = 8  # app.services.audit.log._WRITE_ATTEMPTS
Call = dict[str, Any]  # what the call knows: its arguments, then each step's `keep`
Params = dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One statement of a call: its parameters from what the call knows so far, and under
    which name (`keep`) the call keeps its first row (`fetch="one"`) or all rows (`"all"`).
    `moves_head`: the statement moves an audit chain's head from the head this process last
    wrote (`call["previous_seq"]`) and returns a row only if it did; otherwise the head is read
    under its lock (one more round trip, as in roamsign) and the statement sent again."""

    name: str
    statement: TextClause
    params: Callable[[Call], Params]
    fetch: str | None = None
    keep: str | None = None
    moves_head: bool = False


# The head this process last wrote on each chain (app.services.audit.log._LAST_HEADS).
_LAST_HEADS: dict[int, int] = {}


def run_shape(db: Connection, shape: Sequence[Step], call: Call) -> None:
    for step in shape:
        if step.moves_head:
            move_head(db, step.statement, step.params, call)
            continue
        result = db.execute(step.statement, step.params(call))
        if step.fetch == "one":
            row = result.one()
            if step.keep:
                call[step.keep] = row
        elif step.fetch == "all":
            rows = result.all()
            if step.keep:
                call[step.keep] = rows
        else:
            result.close()


def move_head(
    db: Connection, statement: TextClause, params: Callable[[Call], Params], call: Call
) -> None:
    """`statement` (a `_MOVED` one) sent on a random chain, from the head last written here."""
    chain = call["chain"] = secrets.randbelow(AUDIT_CHAINS)
    previous = _LAST_HEADS.get(chain)
    for _attempt in range(WRITE_ATTEMPTS):
        if previous is None:
            previous = db.execute(_HEAD, {"chain": chain}).one().seq
        call["previous_seq"] = previous
        if db.execute(statement, params(call)).first() is not None:
            _LAST_HEADS[chain] = previous + 1
            return
        previous = None  # another writer moved it since
    raise RuntimeError(f"audit chain {chain}: its head kept moving")


def round_trips(shape: Sequence[Step]) -> int:
    """The call's round trips: its steps, the pool's ping, BEGIN and COMMIT."""
    return len(shape) + (1 if PRE_PING else 0) + 2


def _person_key(call: Call) -> str:
    return f"person:{call['body']['mykad']}"


def _bucket(call: Call) -> int:
    return int(call["now"].timestamp()) // 60


def _counts(call: Call) -> dict[str, Any]:
    # The person's counter is one row, locked until the commit; the signer's is sharded.
    call["shard"] = secrets.randbelow(SIGNER_SHARDS)
    return {
        "person_key": _person_key(call),
        "signer_key": SIGNER_KEY,
        "taken_key": f"{SIGNER_KEY}:taken",
        "bucket": _bucket(call),
        "shard": call["shard"],
        "since": _bucket(call) - 1,
        "expires_at": call["now"] + timedelta(minutes=2),
    }


def _outbox(call: Call, purpose: str, recipient: str) -> dict[str, Any]:
    """The call's e-mail (kept as `mail`, handed to delivery after the commit), as a row."""
    mail = _mail(call["request_id"], recipient, otp=purpose == "otp")
    call["mail"] = mail
    return {
        "outbox_id": mail.outbox_id,
        "purpose": purpose,
        "request_id": call["request_id"],
        "recipient": recipient,
        "message": secrets.token_bytes(SEALED_MESSAGE_BYTES),
        "now": call["now"],
        "lease_until": call["now"] + timedelta(seconds=60),
    }


def _event(call: Call, action: str, target_id: str) -> dict[str, Any]:
    return {
        "chain": call["chain"],
        "previous_seq": call["previous_seq"],
        "previous_mac": MAC,
        "seq": call["previous_seq"] + 1,
        "mac": MAC,
        "now": call["now"],
        "action": action,
        "actor": "floor",
        "target_id": target_id,
        "details": '{"channel": "email"}',
    }


def _stale(call: Call) -> dict[str, Any]:
    body = call["body"]
    return {"mykad": body["mykad"], "document_hash": body["document_hash"], "now": call["now"]}


def _lock_keys(call: Call) -> dict[str, int]:
    key = _key_hash(_person_key(call))
    return {"lock_minute": int(key[:15], 16), "lock_day": int(key[15:30], 16)}


def _request_with_event(call: Call) -> dict[str, Any]:
    body = call["body"]
    return {
        **_event(call, "otp.issued", call["request_id"]),
        **_counts(call),
        **_outbox(call, "otp", call["person"].email),
        "shard": call["shard"],
        "signer_id": "c1",
        "person": call["person"].id,
        "document_hash": body["document_hash"],
        "document_name": body.get("document_name", ""),
        "otp_mac": MAC,
        "request_expires_at": call["now"] + timedelta(seconds=120),
    }


def _signed_with_event(call: Call) -> dict[str, Any]:
    return {
        **_event(call, "signature.created", call["request_id"]),
        **_outbox(call, "signing_notice", call["request"].email),
        "signature_id": uuid.uuid4().hex,
        "signature": call["signature"],
    }


CREATE_SHAPE: tuple[Step, ...] = (
    Step(
        "person with stale requests expired and rate locks",
        _PERSON,
        lambda c: {**_stale(c), **_lock_keys(c)},
        "one",
        keep="person",
    ),
    Step("rate counters and sums", _COUNTS_AND_SUMS, _counts, "all"),
    Step(
        "taken count, request, OTP e-mail and audit event",
        _REQUEST_WITH_EVENT,
        _request_with_event,
        moves_head=True,
    ),
)

SIGN_SHAPE: tuple[Step, ...] = (
    Step("request and person", _REQUEST, lambda c: {"id": c["request_id"]}, "one", keep="request"),
    Step("attempt counted", _COUNT_ATTEMPT, lambda c: {"id": c["request_id"]}, "one"),
    Step(
        "OTP spent, signature, signing notice and audit event",
        _SIGNED_WITH_EVENT,
        _signed_with_event,
        moves_head=True,
    ),
)
# A delivery: one autocommitted statement a message (no BEGIN, no COMMIT).
DELIVERY_ROUND_TRIPS = 1


def describe_shape() -> str:
    """The two calls' statements and round trips, as floor.py prints them."""
    lines = []
    for call, shape in (("OTP request", CREATE_SHAPE), ("signature", SIGN_SHAPE)):
        names = ", ".join(step.name for step in shape)
        ping = "ping, " if PRE_PING else ""
        lines.append(f"{call}: {round_trips(shape)} round trips ({ping}BEGIN, {names}, COMMIT)")
    lines.append(
        f"each e-mail's delivery: {DELIVERY_ROUND_TRIPS} round trip (marked sent with its audit "
        "event, autocommitted)"
    )
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
        self._clients: dict[str, Any] = {}
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
            self._caller(db, api_key)
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
            self._caller(db, api_key)
            run_shape(db, SIGN_SHAPE, call)
        self._hand_over(call["mail"])
        return {"id": request_id, "signature": signature.hex(), "signed_at": now.isoformat()}

    def _caller(self, db: Connection, api_key: str) -> Any:
        key_hash = _key_hash(api_key)
        client = self._clients.get(key_hash)
        if client is None:
            client = self._clients[key_hash] = db.execute(_CLIENT, {"key_hash": key_hash}).one()
        return client

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
            # Each message marked sent with its audit event: one autocommitted statement.
            for mail in batch:
                call: Call = {"now": datetime.now(UTC)}
                with self.engine.connect() as db:
                    autocommit = db.execution_options(isolation_level="AUTOCOMMIT")
                    move_head(autocommit, _SENT_WITH_EVENT, _sent_params(mail.outbox_id), call)
        smtp.quit()


def _sent_params(outbox_id: str) -> Callable[[Call], Params]:
    def params(call: Call) -> Params:
        return {**_event(call, "mail.delivered", outbox_id), "outbox_id": outbox_id}

    return params


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
