"""Scaling benchmark: does a flow cost more with more people, or with more history?

Per database (SQLite with one worker, PostgreSQL with `--workers`), in one run, on one database
that grows step by step (the server is stopped while rows are added, and restarted for each
measurement so each worker's peak RSS belongs to that configuration):

1. People: `--people-steps` (default 1, 10,000, 100,000) people with an active roaming ECDSA
   P-256 credential besides the flow's own `--flow-people`, added by bulk inserts.
2. History: with the largest population, `--history-steps` (default 100,000 and 1,000,000)
   historical signing requests (signed with their signature, run out unused, expired,
   cancelled, locked), with their delivered OTP e-mails, signing notices and audit events,
   spread over a year and over every person, made by INSERT ... SELECT in the database.
   The last people step is the 0-history baseline.
3. Per configuration: the same fixed number of complete flows (request -> OTP e-mail -> sign,
   bench/flow.py's FlowDriver) in a closed loop, after an uncounted warm-up, until their
   signing notices have arrived too: flows/s, p50/p99, the server's (and PostgreSQL's) CPU per
   flow from /proc, and each server process's peak RSS (VmHWM). Ratios against the first
   configuration (people) and the 0-history one (history).
4. The plans of the hot path's statements with the biggest tables: on PostgreSQL the plans the
   real server used (auto_explain, generic plans of prepared statements included), on SQLite
   `EXPLAIN QUERY PLAN` of the statements the real server sent (recorded by a SQLAlchemy event
   hook loaded into the server processes through `sitecustomize`); full scans are listed.

What the bulk rows hold (see bench/README.md): every filler person has a real P-256 key, sealed
under its own credential id, and a real certificate from the database's CA, made once per run
and shared by both databases (same master key, same CA rows). Historical rows carry random
document hashes, OTP MACs and signature bytes of real lengths; their audit events have the
right chains and sequence numbers but placeholder MACs (see HistoryBuilder).

    .venv/bin/python bench/scale.py [--db sqlite|postgresql|both] [--flows 300]
        [--people-steps 1,10000,100000] [--history-steps 100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pickle
import random
import re
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import Engine, Table, func, insert, select, update  # noqa: E402

from app.clock import SystemClock  # noqa: E402
from app.crypto.ca import certificate_pem, serial_hex  # noqa: E402
from app.crypto.cms import build_detached_cms  # noqa: E402
from app.crypto.secrets import pin_mac  # noqa: E402
from app.models import (  # noqa: E402
    ApiClient,
    AuditChainHead,
    AuditEvent,
    CertificateAuthority,
    Credential,
    OutboxMessage,
    Signature,
    SigningRequest,
    User,
)
from app.runtime import Runtime  # noqa: E402
from app.services.audit.log import (  # noqa: E402
    DEFAULT_CHAINS,
    EVENT_COLUMNS,
    chain_for,
    subject_ref,
)
from app.services.ca import CertificateAuthorityService  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.validation import mask_mykad  # noqa: E402
from bench.enrol import mykad_for  # noqa: E402
from bench.harness.clients import REQUEST_TIMEOUT_SECONDS, Lanes  # noqa: E402
from bench.harness.fixtures import (  # noqa: E402
    SQLITE_FILE,
    open_sink_and_database,
    seed,
    start_server,
)
from bench.harness.flows import FlowDriver, IdlePeople, Mailbox  # noqa: E402
from bench.harness.load import drain, settle_notices  # noqa: E402
from bench.harness.measure import CpuMeter, PhaseStats, percentile, postmaster_pid  # noqa: E402
from bench.harness.report import machine  # noqa: E402
from tests.factories import DEFAULT_PIN, Person  # noqa: E402
from tests.harness import Server  # noqa: E402
from tests.pg_server import TemporaryPostgres  # noqa: E402

BATCH_ROWS = 20_000  # rows per executemany / COPY
HISTORY_DAYS = 365
FLOW_PEOPLE_HISTORY_SHARE = 0.05  # of historical requests: the people who sign in the run
# Historical requests: (status, share); signed ones have a signature, an OTP e-mail and a notice.
# Historical requests by how they ended; cumulative shares. Nothing marks an unused OTP's request
# `expired` except a new request for the same person and hash (SigningService), so most requests
# that ran out stay `pending` with `expires_at` in the past ("stale").
STATUS_MIX = (
    ("signed", 0.70),
    ("stale", 0.82),
    ("expired", 0.85),
    ("cancelled", 0.95),
    ("locked", 1.0),
)
RAW_SHARE = 0.10  # signed requests in the `raw` format (a bare ECDSA signature), else `cms`
PHASE_CAP_SECONDS = 240.0  # no new flow starts after this, whatever --flows says
ROWS_READ = 1000  # a hot-path statement reading more rows than this in one execution is flagged
BIG_TABLES = {
    "users",
    "credentials",
    "signing_requests",
    "signatures",
    "outbox_messages",
    "audit_events",
}
TRACE_HOOK = '''\
"""Loaded by bench/scale.py into the server processes: records each distinct SQL statement."""
import os, pickle
from sqlalchemy import event
from sqlalchemy.engine import Engine

_seen = set()
_path = os.path.join(os.environ["ROAMSIGN_BENCH_TRACE_DIR"], f"{os.getpid()}.pickle")


def _plain(value):
    return bytes(value) if isinstance(value, memoryview) else value


@event.listens_for(Engine, "before_cursor_execute")
def _record(conn, cursor, statement, parameters, context, executemany):
    if statement in _seen:
        return
    _seen.add(statement)
    try:  # never in the way of the statement itself
        params = parameters[0] if executemany and parameters else parameters
        if isinstance(params, dict):
            params = {key: _plain(value) for key, value in params.items()}
        elif isinstance(params, (list, tuple)):
            params = tuple(_plain(value) for value in params)
        with open(_path, "ab") as out:
            pickle.dump((conn.dialect.name, statement, params), out)
    except Exception as exc:  # noqa: BLE001
        with open(_path + ".errors", "a") as out:
            out.write(f"{type(exc).__name__}: {exc}: {statement[:200]}\\n")
'''


# --------------------------------------------------------------------------- bulk rows


def sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores a UtcDateTime on SQLite: naive UTC, always six decimals."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
    return text if len(text) > 19 else text + ".000000"


def bulk_insert(
    engine: Engine,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    *,
    ready: bool = False,
) -> None:
    """Many rows at once: COPY on PostgreSQL; on SQLite one executemany of driver-ready tuples
    (datetimes as SQLAlchemy stores them, done here unless `ready`) in one transaction."""
    if not rows:
        return
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with (
                raw.driver_connection.cursor() as cursor,  # type: ignore[union-attr]
                cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        return
    if not ready:
        rows = [
            tuple(sqlite_time(v) if isinstance(v, datetime) else v for v in row) for row in rows
        ]
    statement = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    with engine.begin() as connection:
        connection.exec_driver_sql(statement, rows)


def sqlite_bulk_mode(engine: Engine, on: bool) -> None:
    """For the builder's own (pooled, reused) SQLite connection while it loads: a 1 GiB page
    cache, no fsync, and no per-row foreign key checks (the rows are made consistent). The
    server's connections keep the app's settings."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        driver.execute(f"PRAGMA cache_size={-1048576 if on else -2000}")
        driver.execute(f"PRAGMA synchronous={'OFF' if on else 'NORMAL'}")
        driver.execute(f"PRAGMA foreign_keys={'OFF' if on else 'ON'}")
    finally:
        raw.close()


@contextlib.contextmanager
def loading(connection: Any) -> Iterator[None]:
    """PostgreSQL: no foreign key triggers in this session while it loads rows that are
    consistent by construction (what pg_restore does); SQLite: see sqlite_bulk_mode."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.exec_driver_sql("SET session_replication_role = replica")
    try:
        yield
    finally:
        if postgres:
            connection.exec_driver_sql("SET session_replication_role = DEFAULT")
            connection.commit()


@dataclass
class Filler:
    """Filler people with real keys and certificates, made once and inserted into each database
    (same master key, same CA): every one of them could sign with DEFAULT_PIN."""

    users: list[tuple[Any, ...]]
    credentials: list[tuple[Any, ...]]
    seconds: float
    cms_length: int  # of a real CMS signature by one of them, for the historical rows


USER_COLUMNS: tuple[str, ...] = (
    "id",
    "mykad",
    "name",
    "email",
    "phone",
    "agency",
    "created_at",
    "updated_at",
    "consecutive_failed_checks",
)
CREDENTIAL_COLUMNS = (
    "id",
    "user_id",
    "medium",
    "status",
    "key_algorithm",
    "key_blob",
    "certificate_pem",
    "certificate_serial",
    "not_before",
    "not_after",
    "pin_mac",
    "pin_failures",
    "created_at",
    "updated_at",
)


def make_filler(runtime: Runtime, count: int) -> Filler:
    began = time.perf_counter()
    now = runtime.clock.now()
    settings = runtime.settings
    users: list[tuple[Any, ...]] = []
    credentials: list[tuple[Any, ...]] = []
    with runtime.sessions() as session:
        ca = CertificateAuthorityService(
            session, runtime.key_store, runtime.ca_cache, settings.ca_name, settings.public_base_url
        )
        for n in range(count):
            user_id, credential_id = str(uuid.uuid4()), str(uuid.uuid4())
            name = f"Penjawat Awam {n}"
            generated = runtime.key_store.generate(credential_id, "ecdsa-p256")
            certificate = ca.issue(
                generated.public_key, name, user_id, now, settings.certificate_validity_days
            )
            users.append(
                (
                    user_id,
                    mykad_for(n),
                    name,
                    f"pegawai{n}@agensi.gov.my",
                    None,
                    f"AGENSI-{n % 40}",
                    now,
                    now,
                    0,
                )
            )
            credentials.append(
                (
                    credential_id,
                    user_id,
                    "roaming",
                    "active",
                    "ecdsa-p256",
                    generated.blob,
                    certificate_pem(certificate),
                    serial_hex(certificate),
                    certificate.not_valid_before_utc,
                    certificate.not_valid_after_utc,
                    pin_mac(runtime.keys.pin_pepper, credential_id, DEFAULT_PIN),
                    0,
                    now,
                    now,
                )
            )
        # One real CMS signature, for the length of the historical ones.
        from cryptography import x509

        material = ca.material()
        credential_id, blob, pem = credentials[0][0], credentials[0][5], credentials[0][6]
        cms = build_detached_cms(
            digest=secrets.token_bytes(32),
            hash_algorithm="sha256",
            certificate=x509.load_pem_x509_certificate(pem.encode()),
            chain=[material.issuing, material.root],
            signing_time=now,
            sign=lambda data, algorithm: runtime.key_store.sign_digest(
                credential_id, blob, data, algorithm
            ),
        )
    return Filler(users, credentials, time.perf_counter() - began, len(cms))


def add_people(engine: Engine, filler: Filler, start: int, stop: int) -> float:
    began = time.perf_counter()
    sqlite_bulk_mode(engine, True)
    try:
        for first in range(start, stop, BATCH_ROWS):
            last = min(first + BATCH_ROWS, stop)
            bulk_insert(engine, User.__table__, USER_COLUMNS, filler.users[first:last])  # type: ignore[arg-type]
            bulk_insert(
                engine,
                Credential.__table__,  # type: ignore[arg-type]
                CREDENTIAL_COLUMNS,
                filler.credentials[first:last],
            )
    finally:
        sqlite_bulk_mode(engine, False)
    return time.perf_counter() - began


REQUEST_COLUMNS = (
    "id",
    "signer_id",
    "user_id",
    "credential_id",
    "document_hash",
    "hash_algorithm",
    "document_name",
    "channel",
    "destination",
    "signature_format",
    "otp_mac",
    "status",
    "attempts",
    "created_at",
    "expires_at",
    "finished_at",
)
SIGNATURE_COLUMNS = (
    "id",
    "request_id",
    "signature",
    "signature_format",
    "signature_algorithm",
    "certificate_serial",
    "signed_at",
)
OUTBOX_COLUMNS = (
    "id",
    "purpose",
    "request_id",
    "recipient",
    "sealed_message",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "not_after",
    "sent_at",
)


class Dialect:
    """The SQL that differs between PostgreSQL and SQLite when rows are made in the database."""

    def __init__(self, name: str) -> None:
        self.postgres = name == "postgresql"

    def fraction(self) -> str:  # uniform in [0, 1)
        return "random()" if self.postgres else "(random() / 18446744073709551616.0 + 0.5)"

    def floor(self, expression: str) -> str:
        return f"floor({expression})::int" if self.postgres else f"CAST({expression} AS INTEGER)"

    def uuid(self, column: str) -> str:
        """A random UUID (v4) from a column made by `random_hex16`."""
        if self.postgres:
            return column
        h = column
        return (
            f"substr({h},1,8)||'-'||substr({h},9,4)||'-4'||substr({h},14,3)||'-8'||"
            f"substr({h},18,3)||'-'||substr({h},21,12)"
        )

    def random_hex16(self) -> str:
        return "gen_random_uuid()::text" if self.postgres else "lower(hex(randomblob(16)))"

    def random_hex32(self) -> str:
        if self.postgres:
            return "md5(random()::text) || md5(random()::text)"
        return "lower(hex(randomblob(32)))"

    def random_bytes32(self) -> str:
        if self.postgres:
            return "decode(md5(random()::text) || md5(random()::text), 'hex')"
        return "randomblob(32)"

    def time(self, epoch: str) -> str:
        """A UtcDateTime from Unix seconds, stored as the app stores it."""
        if self.postgres:
            return f"to_timestamp({epoch})"
        return f"strftime('%Y-%m-%d %H:%M:%f', {epoch}, 'unixepoch') || '000'"

    def json(self, expression: str) -> str:
        return f"CAST({expression} AS json)" if self.postgres else expression

    def series(self, first: int, last: int) -> tuple[str, str]:
        """(WITH clause, FROM item) giving integers first..last as `i`."""
        if self.postgres:
            return "", f"generate_series({first}, {last}) AS g(i)"
        return (
            f"WITH RECURSIVE g(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM g "
            f"WHERE i < {last}) ",
            "g",
        )


BLOB_POOL = 512  # random signature bodies, one copy stored per row


class HistoryBuilder:
    """Appends historical signing requests, and what they left behind, made by INSERT ...
    SELECT in the database itself (PostgreSQL's generate_series, SQLite's recursive CTE):
    Python would spend minutes per million rows on the values alone.

    Per request: a signing request (70 % signed, 12 % run out unused and still `pending`, 3 %
    marked `expired`, 10 % cancelled, 5 % locked;
    10 % of the signed ones `raw`, the rest `cms`), its OTP e-mail (sent and wiped), and for a
    signed one its signature (random bytes of the real length) and the signing notice (sent);
    audit events: `otp.issued`, then `signature.created` / `signing_request.locked` /
    `signing_request.cancelled`, in the person's chain with the right sequence numbers but
    placeholder MACs (the chain heads are moved past them, so live events chain on; `audit
    verify` would flag the historical ones). Times: uniform over the year before the run.
    People: 5 % of the requests belong to the people who sign in the run, the rest are spread
    uniformly over everyone else.
    """

    def __init__(
        self, runtime: Runtime, flow_people: list[Person], cms_length: int, batch: int = 100_000
    ) -> None:
        self.engine = runtime.engine
        self.sql = Dialect(self.engine.dialect.name)
        self.batch = batch
        self.end = (runtime.clock.now() - timedelta(hours=1)).timestamp()
        self.total = 0
        self.timings: dict[str, float] = {}
        flow_ids = {person.user_id for person in flow_people}
        subject_key = runtime.keys.subject_ref
        with runtime.sessions() as session:
            client = session.execute(
                select(ApiClient.id, ApiClient.name).where(ApiClient.name == "bench-signer")
            ).one()
            self.signer_id, self.signer_name = client.id, client.name
            people = list(
                session.execute(
                    select(
                        User.id,
                        User.mykad,
                        User.email,
                        Credential.id.label("credential_id"),
                        Credential.certificate_serial,
                    )
                    .join(Credential, Credential.user_id == User.id)
                    .where(Credential.medium == "roaming", Credential.status == "active")
                ).all()
            )
        # The people who sign in the run first: who < len(flow) picks one of them.
        people.sort(key=lambda row: row.id not in flow_ids)
        self.flow_count = sum(1 for row in people if row.id in flow_ids)
        self.people = len(people)
        self.signers = []
        for n, row in enumerate(people):
            ref = subject_ref(subject_key, row.mykad)
            self.signers.append(
                (
                    n,
                    row.id,
                    row.credential_id,
                    row.certificate_serial,
                    row.email,
                    chain_for(ref, DEFAULT_CHAINS),
                    ref,
                    mask_mykad(row.mykad),
                )
            )
        rng = random.Random(7)
        self.blobs = [(k, rng.randbytes(cms_length), rng.randbytes(71)) for k in range(BLOB_POOL)]

    def add(self, count: int) -> float:
        began = time.perf_counter()
        sqlite_bulk_mode(self.engine, True)
        with self.engine.connect() as connection, loading(connection):
            self._temporary_tables(connection)
            try:
                done = 0
                while done < count:
                    size = min(self.batch, count - done)
                    self._batch(connection, self.total + done, size)
                    connection.commit()
                    done += size
            finally:
                for table in ("bench_stage", "bench_rand", "bench_signers", "bench_blobs"):
                    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
                connection.commit()
        sqlite_bulk_mode(self.engine, False)
        self.total += count
        return time.perf_counter() - began

    def _temporary_tables(self, connection: Any) -> None:
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE bench_signers (n INTEGER PRIMARY KEY, user_id TEXT, "
            "credential_id TEXT, certificate_serial TEXT, email TEXT, chain INTEGER, "
            "ref TEXT, masked TEXT)"
        )
        blob = "bytea" if self.sql.postgres else "BLOB"
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE bench_blobs (k INTEGER PRIMARY KEY, cms {blob}, raw {blob})"
        )
        marks = "%s" if self.sql.postgres else "?"
        connection.exec_driver_sql(
            f"INSERT INTO bench_signers VALUES ({', '.join([marks] * 8)})", self.signers
        )
        connection.exec_driver_sql(
            f"INSERT INTO bench_blobs VALUES ({marks}, {marks}, {marks})", self.blobs
        )
        connection.commit()

    def _batch(self, connection: Any, first: int, size: int) -> None:
        sql = self.sql
        f = sql.fraction()
        with_clause, series = sql.series(first, first + size - 1)
        for table in ("bench_stage", "bench_rand"):
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        # Every random value drawn once, so that no query rewrite can draw it twice.
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE bench_rand AS {with_clause}SELECT i, {f} AS r_who, "
            f"{f} AS r_n, {f} AS r_status, {f} AS r_format, {f} AS r_time, {f} AS r_delay, "
            + ", ".join(f"{sql.random_hex16()} AS h{k}" for k in range(4))
            + f" FROM {series}"
        )
        others = max(self.people - self.flow_count, 1)
        who = (
            f"CASE WHEN r_who < {FLOW_PEOPLE_HISTORY_SHARE} AND {self.flow_count} > 0 "
            f"THEN {sql.floor(f'r_n * {max(self.flow_count, 1)}')} "
            f"ELSE {min(self.flow_count, self.people - 1)} + {sql.floor(f'r_n * {others}')} END"
        )
        status = (
            "CASE "
            + " ".join(f"WHEN r_status < {share} THEN '{name}'" for name, share in STATUS_MIX[:-1])
            + f" ELSE '{STATUS_MIX[-1][0]}' END"
        )
        created = f"({self.end} - r_time * {HISTORY_DAYS * 86400.0})"
        connection.exec_driver_sql(
            "CREATE TEMPORARY TABLE bench_stage AS SELECT i, who, status, fmt, created, "
            "created + CASE status WHEN 'signed' THEN 10 + r_delay * 100 "
            "WHEN 'locked' THEN 30 + r_delay * 80 WHEN 'cancelled' THEN 5 + r_delay * 105 "
            "ELSE 120 + r_delay * 3600 END AS finished, r_delay, "
            f"{sql.uuid('h0')} AS request_id, {sql.uuid('h1')} AS otp_id, "
            f"{sql.uuid('h2')} AS signature_id, {sql.uuid('h3')} AS notice_id "
            f"FROM (SELECT i, {who} AS who, {status} AS status, "
            f"CASE WHEN r_format < {RAW_SHARE} THEN 'raw' ELSE 'cms' END AS fmt, "
            f"{created} AS created, r_delay, h0, h1, h2, h3 FROM bench_rand) x"
        )
        t = sql.time
        joined = "FROM bench_stage st JOIN bench_signers s ON s.n = st.who"
        signer, actor = f"'{self.signer_id}'", f"'{self.signer_name}'"
        statements = [
            f"INSERT INTO signing_requests ({', '.join(REQUEST_COLUMNS)}) SELECT st.request_id, "
            f"{signer}, s.user_id, s.credential_id, {sql.random_hex32()}, 'sha256', "
            "'Baucar PV-' || st.i, 'email', 'p***@agensi.gov.my', st.fmt, "
            f"{sql.random_bytes32()}, CASE st.status WHEN 'stale' THEN 'pending' "
            "ELSE st.status END, CASE st.status WHEN 'signed' THEN 1 "
            f"WHEN 'locked' THEN 3 ELSE 0 END, {t('st.created')}, {t('st.created + 120')}, "
            f"CASE WHEN st.status = 'stale' THEN NULL ELSE {t('st.finished')} END {joined}",
            f"INSERT INTO signatures ({', '.join(SIGNATURE_COLUMNS)}) SELECT st.signature_id, "
            "st.request_id, CASE st.fmt WHEN 'raw' THEN b.raw ELSE b.cms END, st.fmt, "
            f"'ecdsa-with-SHA256', s.certificate_serial, {t('st.finished')} {joined} "
            f"JOIN bench_blobs b ON b.k = st.i % {BLOB_POOL} WHERE st.status = 'signed'",
            f"INSERT INTO outbox_messages ({', '.join(OUTBOX_COLUMNS)}) SELECT st.otp_id, 'otp', "
            f"st.request_id, s.email, NULL, 'sent', 1, {t('st.created')}, {t('st.created')}, "
            f"{t('st.created + 120')}, {t('st.created + 0.05 + st.r_delay * 2')} {joined}",
            f"INSERT INTO outbox_messages ({', '.join(OUTBOX_COLUMNS)}) SELECT st.notice_id, "
            f"'signing_notice', NULL, s.email, NULL, 'sent', 1, {t('st.finished')}, "
            f"{t('st.finished')}, NULL, {t('st.finished + 1')} {joined} "
            "WHERE st.status = 'signed'",
            f"INSERT INTO audit_events ({', '.join(EVENT_COLUMNS)}) SELECT e.chain, "
            "COALESCE(h.seq, 0) + row_number() OVER (PARTITION BY e.chain ORDER BY e.at, e.i, "
            f"e.kind), {t('e.at')}, e.action, {actor}, e.ref, e.masked, e.request_id, 'ok', "
            f"{sql.json('e.details')}, {sql.random_hex32()} FROM ("
            "SELECT s.chain, s.ref, s.masked, st.request_id, st.i, 0 AS kind, st.created AS at, "
            '\'otp.issued\' AS action, \'{"channel": "email", "hash_algorithm": '
            '"sha256", "signature_format": "\' || st.fmt || \'"}\' AS details '
            f"{joined} UNION ALL "
            "SELECT s.chain, s.ref, s.masked, st.request_id, st.i, 1, st.finished, "
            "CASE st.status WHEN 'signed' THEN 'signature.created' "
            "ELSE 'signing_request.' || st.status END, "
            "CASE st.status WHEN 'signed' THEN '{\"certificate_serial\": \"' || "
            's.certificate_serial || \'", "signature_format": "\' || st.fmt || \'"}\' '
            f"ELSE '{{}}' END {joined} WHERE st.status NOT IN ('expired', 'stale')"
            ") e LEFT JOIN audit_chain_heads h ON h.chain = e.chain",
        ]
        for statement in statements:
            began = time.perf_counter()
            connection.exec_driver_sql(statement.replace("%", "%%") if sql.postgres else statement)
            table = statement.split()[2]
            self.timings[table] = self.timings.get(table, 0.0) + time.perf_counter() - began
        self._move_heads(connection)

    def _move_heads(self, connection: Any) -> None:
        """Each chain's head to its last event (an index lookup per chain)."""
        for chain in range(DEFAULT_CHAINS):
            last = connection.execute(
                select(AuditEvent.seq, AuditEvent.mac)
                .where(AuditEvent.chain == chain)
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            ).first()
            if last is None:
                continue
            moved = connection.execute(
                update(AuditChainHead)
                .where(AuditChainHead.chain == chain)
                .values(seq=last.seq, mac=last.mac)
            )
            if moved.rowcount == 0:
                connection.execute(
                    insert(AuditChainHead).values(chain=chain, seq=last.seq, mac=last.mac)
                )


def settle(engine: Engine) -> float:
    """What a running deployment would have done by itself: PostgreSQL's autovacuum (visibility
    map, statistics); SQLite: fold the write-ahead log back (no ANALYZE: the app never runs it)."""
    began = time.perf_counter()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in sorted(BIG_TABLES | {"audit_chain_heads"}):
                connection.exec_driver_sql(f"VACUUM ANALYZE {table}")
    else:
        raw = engine.raw_connection()  # no transaction: a checkpoint cannot run inside one
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
    return time.perf_counter() - began


def table_counts(engine: Engine) -> dict[str, int]:
    models = (User, Credential, SigningRequest, Signature, OutboxMessage, AuditEvent)
    with engine.connect() as connection:
        return {
            model.__tablename__: int(
                connection.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in models
        }


def database_bytes(engine: Engine, sqlite_path: Path | None) -> int:
    if sqlite_path is not None:
        return sum(
            p.stat().st_size for p in sqlite_path.parent.glob(sqlite_path.name + "*") if p.is_file()
        )
    with engine.connect() as connection:
        return int(connection.scalar(select(func.pg_database_size(func.current_database()))) or 0)


# --------------------------------------------------------------------------- measuring


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def memory_of(pid: int) -> tuple[str, int, int] | None:
    """(role, VmHWM kB, VmRSS kB) of one server process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    values = dict(
        (line.split(":", 1)[0], line.split(":", 1)[1].split()[0])
        for line in status.splitlines()
        if line.startswith(("VmHWM", "VmRSS"))
    )
    if "resource_tracker" in cmdline:
        role = "tracker"
    elif "multiprocessing" in cmdline:
        role = "worker"
    else:
        role = "main"
    return role, int(values.get("VmHWM", 0)), int(values.get("VmRSS", 0))


def server_memory(server: Server) -> list[tuple[str, int, int]]:
    """Each server process's peak and current RSS; with one process, it is the worker."""
    found = [m for pid in process_tree(server.process.pid) if (m := memory_of(pid)) is not None]
    if not any(role == "worker" for role, _, _ in found):
        found = [("worker" if role == "main" else role, hwm, rss) for role, hwm, rss in found]
    return found


async def fixed_closed_loop(
    driver: FlowDriver, idle: IdlePeople, concurrency: int, count: int, stats: PhaseStats
) -> None:
    """`count` flows, `concurrency` in flight; none starts after PHASE_CAP_SECONDS."""
    deadline = time.perf_counter() + PHASE_CAP_SECONDS
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            person = await idle.take()
            try:
                await driver.flow(person, stats, time.perf_counter())
            finally:
                await idle.give_back(person)

    tasks = {asyncio.create_task(worker()) for _ in range(concurrency)}
    await asyncio.wait(tasks, timeout=PHASE_CAP_SECONDS + 2 * REQUEST_TIMEOUT_SECONDS)
    await drain(tasks, stats)
    if left > 0:
        stats.failures[f"not started: {PHASE_CAP_SECONDS:.0f} s cap"] += left


@dataclass
class Measurement:
    database: str
    label: str
    people: int  # everyone with an active roaming credential
    history: int  # historical signing requests added
    stats: PhaseStats
    wall: float = 0.0
    memory: list[tuple[str, int, int]] = field(default_factory=list)
    error: str | None = None
    role: str = "people"  # or "repeat" (the baseline measured again), "history"

    @property
    def rate(self) -> float:
        return len(self.stats.latencies_ms) / self.wall if self.wall else 0.0

    def cpu_ms(self, tree: str) -> float | None:
        share = self.stats.cpu.get(tree)
        if share is None or not self.rate:
            return None
        return share * 10 / self.rate

    @property
    def server_db_ms(self) -> float | None:
        server = self.cpu_ms("server")
        return None if server is None else server + (self.cpu_ms("database") or 0.0)


async def drive(
    server: Server,
    api_key: str,
    people: list[Person],
    mailbox: Mailbox,
    args: argparse.Namespace,
    trees: dict[str, int | None],
    measurement: Measurement,
    concurrency: int,
    flows: int,
    warmup: int,
) -> None:
    mailbox.bind(asyncio.get_running_loop())
    lanes = Lanes(server.url, api_key)
    try:
        idle = IdlePeople(people, random.Random(args.seed))
        driver = FlowDriver(lanes, mailbox, measurement.label)
        if warmup:
            warm = PhaseStats("warm-up")
            await fixed_closed_loop(driver, idle, concurrency, warmup, warm)
            if warm.errors:
                print(f"    warm-up failures: {dict(warm.failures)}", flush=True)
            await settle_notices(mailbox)
        stats = measurement.stats
        stats.window_end = float("inf")
        meter = CpuMeter(trees)
        began = time.perf_counter()
        await fixed_closed_loop(driver, idle, concurrency, flows, stats)
        # The flows' signing notices are part of their cost (the server sends OTPs first, so
        # under load notices queue): the measurement ends when the last one has arrived.
        stats.notices_behind = mailbox.notices_behind()
        stats.notices_missing = await settle_notices(mailbox)
        measurement.wall = stats.duration = time.perf_counter() - began
        stats.cpu = meter.stop()
        if stats.notices_missing:
            print(f"    {stats.notices_missing} signing notices never arrived", flush=True)
    finally:
        mailbox.unbind()
        await lanes.aclose()


def measure(
    context: DatabaseContext,
    label: str,
    args: argparse.Namespace,
    *,
    flows: int | None = None,
    concurrency: int | None = None,
    warmup: int | None = None,
) -> Measurement:
    measurement = Measurement(
        context.database, label, context.people, context.history, PhaseStats(label)
    )
    server = start_server(
        database_url=context.url,
        key_file=context.key_file,
        var_dir=context.directory,
        smtp_port=context.sink.port,
        workers=context.workers,
    )
    try:
        trees = {"server": server.process.pid, "database": context.postmaster}
        asyncio.run(
            drive(
                server,
                context.api_key,
                context.flow_people,
                context.mailbox,
                args,
                trees,
                measurement,
                concurrency or args.concurrency,
                args.flows if flows is None else flows,
                args.warmup_flows if warmup is None else warmup,
            )
        )
        measurement.memory = server_memory(server)
        if server.process.poll() is not None:
            measurement.error = f"the server exited ({server.process.returncode})"
        elif measurement.stats.server_errors:
            measurement.error = f"server errors; log tail:\n{server.tail()}"
    finally:
        server.stop()
    return measurement


# --------------------------------------------------------------------------- query plans


def postgres_plans(log_text: str) -> dict[str, dict[str, Any]]:
    """Distinct statements in an auto_explain (JSON) log: their plans' scans and timings."""
    found: dict[str, dict[str, Any]] = {}
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", log_text)
    for entry in entries:
        marker = entry.find("plan:")
        if "duration:" not in entry or marker < 0:
            continue
        body = "\n".join(line.removeprefix("\t") for line in entry[marker + 5 :].splitlines())
        try:
            plan = json.loads(body)
        except ValueError:
            continue
        text = " ".join(str(plan.get("Query Text", "")).split())
        duration = float(re.search(r"duration: ([0-9.]+) ms", entry).group(1))  # type: ignore[union-attr]
        scans: set[str] = set()
        generic = False
        rows_read = 0
        stack = [plan.get("Plan", {})]
        while stack:
            node = stack.pop()
            stack.extend(node.get("Plans", []))
            kind, relation = node.get("Node Type", ""), node.get("Relation Name")
            if relation:
                index = node.get("Index Name")
                scans.add(f"{kind} on {relation}" + (f" using {index}" if index else ""))
                if relation in BIG_TABLES and "Scan" in kind:
                    loops = int(node.get("Actual Loops", 1) or 1)
                    read = sum(
                        int(node.get(key, 0) or 0)
                        for key in (
                            "Actual Rows",
                            "Rows Removed by Filter",
                            "Rows Removed by Index Recheck",
                        )
                    )
                    rows_read = max(rows_read, read * loops)
            for key in ("Index Cond", "Filter", "Recheck Cond"):
                if "$" in str(node.get(key, "")):
                    generic = True
        seen = found.setdefault(
            text, {"count": 0, "max_ms": 0.0, "scans": set(), "generic": False, "rows_read": 0}
        )
        seen["rows_read"] = max(seen["rows_read"], rows_read)
        seen["count"] += 1
        seen["max_ms"] = max(seen["max_ms"], duration)
        seen["scans"] |= scans
        seen["generic"] |= generic
    return found


def sqlite_plans(trace_dir: Path, database: Path) -> dict[str, dict[str, Any]]:
    """`EXPLAIN QUERY PLAN` of every distinct statement the server processes sent."""
    statements: dict[str, Any] = {}
    for path in sorted(trace_dir.glob("*.pickle")):
        with path.open("rb") as source:
            while True:
                try:
                    dialect, statement, params = pickle.load(source)
                except EOFError:
                    break
                if dialect == "sqlite":
                    statements.setdefault(statement, params)
    found: dict[str, dict[str, Any]] = {}
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        for statement, params in statements.items():
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
                continue
            try:
                rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            except sqlite3.Error as exc:
                rows = [(0, 0, 0, f"(not explained: {exc})")]
            found[" ".join(statement.split())] = {
                "count": 1,
                "max_ms": 0.0,
                "scans": {str(row[3]) for row in rows},
                "generic": False,
                "rows_read": 0,
            }
    finally:
        connection.close()
    return found


def full_scans(plans: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(statement, scan) for every full scan of a table that grows with people or history."""
    flagged = []
    for text, plan in plans.items():
        for scan in sorted(plan["scans"]):
            table = None
            if scan.startswith("Seq Scan on "):
                table = scan.split()[3]
            elif scan.startswith("SCAN ") and "USING" not in scan:
                table = scan.split()[1]
            if table in BIG_TABLES:
                flagged.append((text, scan))
    return flagged


def explain_phase(
    context: DatabaseContext, args: argparse.Namespace, *, force_generic: bool = False
) -> dict[str, Any]:
    """Flows on the biggest tables with the statements recorded (SQLite) or their plans logged
    by PostgreSQL itself (auto_explain), at low concurrency so each pooled connection runs each
    statement often enough to be prepared and given a generic plan. `force_generic`: every
    prepared statement (psycopg prepares from the 6th execution on a connection) gets its
    generic plan, the one PostgreSQL may settle on by itself after five custom plans: a
    statement that relies on a parameter's value (a partial index's predicate) shows here."""
    trace_dir = context.directory / "trace"
    trace_dir.mkdir(exist_ok=True)
    (trace_dir / "sitecustomize.py").write_text(TRACE_HOOK)
    database = "roamsign_test"
    pg = context.pg
    log_offset = 0
    if pg is not None:
        log_offset = pg.log_path.stat().st_size
        with context.runtime.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as connection:
            for setting, value in (
                ("session_preload_libraries", "auto_explain"),
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_format", "json"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_timing", "off"),
                *([("plan_cache_mode", "force_generic_plan")] if force_generic else []),
            ):
                connection.exec_driver_sql(f"ALTER DATABASE {database} SET {setting} = '{value}'")
    saved: dict[str, str | None] = {
        name: os.environ.get(name) for name in ("PYTHONPATH", "ROAMSIGN_BENCH_TRACE_DIR")
    }
    if pg is None:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(trace_dir), str(PROJECT_ROOT)])
        os.environ["ROAMSIGN_BENCH_TRACE_DIR"] = str(trace_dir)
    try:
        measurement = measure(
            context, "plans", args, flows=args.explain_flows, concurrency=2, warmup=0
        )
        if force_generic:
            measurement.label = "plans, generic forced"
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
        if pg is not None:
            with context.runtime.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                connection.exec_driver_sql(f"ALTER DATABASE {database} RESET ALL")
    if pg is not None:
        with pg.log_path.open("rb") as log:
            log.seek(log_offset)
            plans = postgres_plans(log.read().decode(errors="replace"))
    else:
        assert context.sqlite_path is not None
        plans = sqlite_plans(trace_dir, context.sqlite_path)
    return {
        "title": "generic plans forced" if force_generic else None,
        "plans": plans,
        "flows": len(measurement.stats.latencies_ms),
        "failures": dict(measurement.stats.failures),
    }


# --------------------------------------------------------------------------- one database


@dataclass
class DatabaseContext:
    database: str
    workers: int
    url: str
    directory: Path
    key_file: Path
    sink: MailSink
    mailbox: Mailbox
    runtime: Runtime
    api_key: str
    flow_people: list[Person]
    pg: TemporaryPostgres | None
    postmaster: int | None
    sqlite_path: Path | None
    people: int = 0
    history: int = 0


@dataclass
class DatabaseResult:
    database: str
    workers: int
    measurements: list[Measurement] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    plan_sets: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class Shared:
    """Made once per run, used by both databases."""

    key_file: Path
    ca_rows: list[dict[str, Any]] | None = None
    filler: Filler | None = None


def run_database(
    database: str, workers: int, args: argparse.Namespace, shared: Shared
) -> DatabaseResult:
    result = DatabaseResult(database, workers)
    name = f"{database}, {workers} worker{'s' if workers > 1 else ''}"
    print(f"== {name}", flush=True)
    people_steps = sorted(args.people_steps)
    history_steps = sorted(args.history_steps)
    if database == "sqlite" and args.sqlite_history_max is not None:
        history_steps = [h for h in history_steps if h <= args.sqlite_history_max]
    with (
        tempfile.TemporaryDirectory(prefix="roamsign-scale-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            directory = Path(tmp)
            mailbox, sink, url, pg = open_sink_and_database(database, directory, stack)
            sqlite_path = directory / SQLITE_FILE if pg is None else None
            settings = Settings(
                profile="production",
                database_url=url,
                master_key_file=shared.key_file,
                var_dir=directory,
                smtp_host="127.0.0.1",
                smtp_port=sink.port,
                delivery_worker=False,
            )
            runtime = Runtime.build(settings, SystemClock())
            stack.callback(runtime.close)
            if shared.ca_rows is not None:  # the first database's CA: the filler's issuer
                with runtime.engine.begin() as connection:
                    connection.execute(insert(CertificateAuthority), shared.ca_rows)
            began = time.perf_counter()
            api_key, flow_people = seed(settings, args.flow_people)
            print(
                f"  seeded the CA, the signer and {len(flow_people)} flow people in "
                f"{time.perf_counter() - began:.1f} s",
                flush=True,
            )
            if shared.ca_rows is None:
                with runtime.engine.connect() as connection:
                    shared.ca_rows = [
                        dict(row._mapping)
                        for row in connection.execute(select(CertificateAuthority.__table__))
                    ]
            if shared.filler is None:
                shared.filler = make_filler(runtime, max(people_steps))
                note = (
                    f"{max(people_steps):,} filler people (P-256 key sealed + certificate from "
                    f"the CA) made in {shared.filler.seconds:.1f} s, once for both databases"
                )
                print(f"  {note}", flush=True)
                result.builds.append(note)
            filler = shared.filler
            context = DatabaseContext(
                database,
                workers,
                url,
                directory,
                shared.key_file,
                sink,
                mailbox,
                runtime,
                api_key,
                flow_people,
                pg,
                postmaster_pid(pg) if pg else None,
                sqlite_path,
                people=len(flow_people),
            )
            inserted = 0
            for step in people_steps:
                seconds = add_people(runtime.engine, filler, inserted, step)
                seconds += settle(runtime.engine)
                note = f"people {inserted:,} -> {step:,}: inserted in {seconds:.1f} s"
                inserted = step
                context.people = len(flow_people) + step
                result.builds.append(note)
                print(f"  {note}", flush=True)
                label = f"{step:,} + {len(flow_people)} people"
                result.measurements.append(report(measure(context, label, args)))
                if step == people_steps[0] and args.repeat_baseline:
                    # The same configuration once more: the noise of this run, to read the
                    # ratios against.
                    again = report(measure(context, f"{label}, again", args))
                    again.role = "repeat"
                    result.measurements.append(again)
            builder = HistoryBuilder(runtime, flow_people, filler.cms_length)
            for step in history_steps:
                seconds = builder.add(step - builder.total)
                settled = settle(runtime.engine)
                context.history = step
                counts = table_counts(runtime.engine)
                size = database_bytes(runtime.engine, sqlite_path) / 2**20
                tables = ", ".join(f"{t} {v:.0f} s" for t, v in builder.timings.items())
                note = (
                    f"history -> {step:,} requests: inserted in {seconds:.1f} s ({tables}, "
                    f"cumulated), settled in {settled:.1f} s; rows {counts}; database "
                    f"{size:,.0f} MiB"
                )
                result.builds.append(note)
                print(f"  {note}", flush=True)
                label = f"{inserted:,} + {len(flow_people)} people, {step:,} history"
                measured = report(measure(context, label, args))
                measured.role = "history"
                result.measurements.append(measured)
            if args.explain_flows:
                passes = [False, True] if pg is not None else [False]
                for force_generic in passes:
                    plans = explain_phase(context, args, force_generic=force_generic)
                    result.plan_sets.append(plans)
                    flagged = full_scans(plans["plans"])
                    print(
                        f"  plans{' (generic forced)' if force_generic else ''}: "
                        f"{len(plans['plans'])} statements, {len(flagged)} full scans of big "
                        "tables",
                        flush=True,
                    )
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {result.error}", flush=True)
    return result


def report(measurement: Measurement) -> Measurement:
    stats = measurement.stats
    workers = ", ".join(
        f"{hwm / 1024:.0f}" for role, hwm, _ in measurement.memory if role == "worker"
    )
    print(
        f"  {measurement.label}: {measurement.rate:.1f} flows/s, p50 "
        f"{fmt(percentile(stats.latencies_ms, 0.5))} ms, server+db "
        f"{fmt(measurement.server_db_ms, 1)} ms CPU/flow, worker peak RSS {workers} MiB, "
        f"{stats.errors} errors",
        flush=True,
    )
    return measurement


# --------------------------------------------------------------------------- the report


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}"


COLUMNS = (
    "database",
    "configuration",
    "flows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "server CPU ms/flow",
    "db CPU ms/flow",
    "server+db ms/flow",
    "ratio (CPU/flow)",
    "ratio (flows/s)",
    "generator %",
    "other %",
    "worker peak RSS MiB",
)


def rows_of(result: DatabaseResult) -> Iterator[list[str]]:
    name = f"{result.database}, {result.workers}w"
    people = [m for m in result.measurements if m.role == "people"]
    if not people:
        return
    people_base, history_base = people[0], people[-1]
    for m in result.measurements:
        base = history_base if m.role == "history" else people_base
        base_mark = " (base)" if m is people_base else ""
        if m is history_base and m is not people_base:
            base_mark = " (history base)"
        p50 = percentile(m.stats.latencies_ms, 0.5)
        p99 = percentile(m.stats.latencies_ms, 0.99)
        workers = " / ".join(f"{hwm / 1024:.0f}" for role, hwm, _ in m.memory if role == "worker")
        yield [
            name,
            m.label + base_mark,
            fmt(m.rate, 1),
            fmt(p50),
            fmt(p99),
            str(m.stats.errors),
            fmt(m.cpu_ms("server"), 1),
            fmt(m.cpu_ms("database"), 1),
            fmt(m.server_db_ms, 1),
            _ratio(m.server_db_ms, base.server_db_ms),
            _ratio(m.rate, base.rate),
            fmt(m.stats.cpu.get("generator")),
            fmt(m.stats.cpu.get("other")),
            workers or "n/a",
        ]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |"]
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def plan_lines(result: DatabaseResult) -> Iterator[str]:
    for plan_set in result.plan_sets:
        plans = plan_set["plans"]
        how = (
            "auto_explain (analyze) in the server's own sessions"
            if result.database == "postgresql"
            else "EXPLAIN QUERY PLAN of the statements the server sent"
        )
        if plan_set["title"]:
            how += f", {plan_set['title']}"
        generic = sum(1 for plan in plans.values() if plan["generic"])
        yield (
            f"- **{result.database}**: {len(plans)} distinct statements in "
            f"{plan_set['flows']} flows at the largest size ({how}"
            + (f"; {generic} ran a generic plan" if result.database == "postgresql" else "")
            + ")"
        )
        if plan_set["failures"]:
            yield f"  - failed flows meanwhile: {plan_set['failures']}"
        flagged = full_scans(plans)
        if not flagged:
            yield "  - no full scan of a table that grows with people or history"
        for text, scan in flagged:
            yield f"  - **{scan}**: `{text[:300]}`"
        heavy = [
            (rows, text) for text, plan in plans.items() if (rows := plan["rows_read"]) > ROWS_READ
        ]
        for rows, text in sorted(heavy, reverse=True):
            yield f"  - **reads {rows:,} rows** in one execution: `{text[:300]}`"
        if result.database == "postgresql" and not heavy:
            worst = max((plan["rows_read"] for plan in plans.values()), default=0)
            yield f"  - no statement read more than {worst:,} rows in one execution"
        small = sorted(
            {
                scan
                for plan in plans.values()
                for scan in plan["scans"]
                if (scan.startswith("Seq Scan") or scan.startswith("SCAN "))
                and scan.split()[3 if scan.startswith("Seq") else 1] not in BIG_TABLES
            }
        )
        if small:
            yield "  - full scans of small tables (fixed size): " + ", ".join(
                f"`{s}`" for s in small
            )


def all_plans(result: DatabaseResult) -> Iterator[str]:
    """Every statement with the scans of its plan(s), for the record."""
    for plan_set in result.plan_sets:
        yield f"{result.database}" + (f", {plan_set['title']}" if plan_set["title"] else "") + ":"
        for text, plan in sorted(plan_set["plans"].items()):
            mark = " [generic]" if plan["generic"] else ""
            rows = f", at most {plan['rows_read']:,} rows read" if plan["rows_read"] else ""
            yield f"  {text[:160]}"
            yield f"    x{plan['count']}{mark}{rows}: " + "; ".join(sorted(plan["scans"]) or ["-"])


def parse_steps(text: str) -> list[int]:
    steps = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if any(step < 0 for step in steps):
        raise argparse.ArgumentTypeError("steps must be 0 or more")
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="server workers on PostgreSQL")
    parser.add_argument("--flow-people", type=int, default=40, help="people who sign in the run")
    parser.add_argument("--people-steps", type=parse_steps, default=[1, 10_000, 100_000])
    parser.add_argument("--history-steps", type=parse_steps, default=[100_000, 1_000_000])
    parser.add_argument(
        "--sqlite-history-max",
        type=int,
        default=None,
        help="skip history steps above this on SQLite (default: none skipped)",
    )
    parser.add_argument("--flows", type=int, default=300, help="measured flows per configuration")
    parser.add_argument("--warmup-flows", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--explain-flows", type=int, default=120, help="flows run to record plans (0: skip)"
    )
    parser.add_argument(
        "--repeat-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the first configuration twice (the run's noise)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (people choice)")
    args = parser.parse_args(argv)
    if not args.people_steps:
        parser.error("--people-steps needs at least one step")
    if args.flow_people < args.concurrency or args.concurrency < 1:
        parser.error("--flow-people must be at least --concurrency, which must be at least 1")
    if not 1 <= args.flow_people <= 9999 or args.flows < 1 or args.workers < 1:
        parser.error("--flow-people must be 1 to 9999, --flows and --workers at least 1")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The servers' retention job (issue 7) would delete the history this benchmark builds, in
    # the middle of a measurement: with the longest retention it finds nothing to delete and
    # only its own index probes are measured. Set ROAMSIGN_RETENTION_DAYS to measure it purging.
    os.environ.setdefault("ROAMSIGN_RETENTION_DAYS", "3650")
    signal.signal(signal.SIGTERM, _terminate)
    load_before = os.getloadavg()
    started = time.perf_counter()
    databases = {
        "sqlite": [("sqlite", 1)],
        "postgresql": [("postgresql", args.workers)],
        "both": [("sqlite", 1), ("postgresql", args.workers)],
    }[args.db]
    results: list[DatabaseResult] = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="roamsign-scale-key-") as keys:
        key_file = Path(keys) / "master.key"
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        key_file.chmod(0o600)
        shared = Shared(key_file)
        try:
            for database, workers in databases:
                results.append(run_database(database, workers, args, shared))
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: the figures below cover what finished")
    elapsed = time.perf_counter() - started
    rows = [row for result in results for row in rows_of(result)]
    print()
    if rows:
        print(plain_table(rows))
    command = " ".join(["python", "bench/scale.py", *(argv if argv is not None else sys.argv[1:])])
    print("\n---- markdown ----\n")
    print(
        f"`{command}` on {machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{elapsed / 60:.1f} min in all"
    )
    load_after = os.getloadavg()
    print(
        f"(1-minute load average {load_before[0]:.2f} before the run, {load_after[0]:.2f} after)\n"
    )
    if rows:
        print(markdown_table(rows))
        print()
    for result in results:
        print(f"- **{result.database}** builds:")
        for note in result.builds:
            print(f"  - {note}")
        for m in result.measurements:
            failures = Counter(m.stats.failures)
            if failures:
                print(f"  - {m.label}: failures {dict(failures)}")
            memory = ", ".join(
                f"{role} {hwm / 1024:.0f} MiB peak / {rss / 1024:.0f} now"
                for role, hwm, rss in m.memory
            )
            print(f"  - {m.label}: server processes: {memory}")
            if m.error:
                print(f"  - {m.label}: {m.error}")
        if result.error:
            print(f"  - **run failed**: {result.error}")
    print()
    for result in results:
        for line in plan_lines(result):
            print(line)
    print("\n---- every statement of the flows, with its plan's scans ----\n")
    for result in results:
        for line in all_plans(result):
            print(line)
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
