"""The history bench/scale.py adds: a year of signing requests, made inside the database
(`INSERT ... SELECT`), with their signatures, e-mails and audit events."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update

from app.models import ApiClient, AuditChainHead, AuditEvent, Credential, User
from app.runtime import Runtime
from app.services.audit.event import subject_ref
from app.services.audit.log import DEFAULT_CHAINS, EVENT_COLUMNS, chain_for
from app.validation import mask_mykad
from bench.scale_people import loading, sqlite_bulk_mode
from tests.factories import Person

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
