"""The people bench/scale.py adds to a database (real ones: a P-256 key sealed under its own
credential id, a certificate from the database's CA), by COPY or executemany, and what a
step leaves: the counts, the size, the time to settle."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, func, select

from app.crypto.ca import certificate_pem, serial_hex
from app.crypto.cms import build_detached_cms
from app.crypto.secrets import pin_mac
from app.models import AuditEvent, Credential, OutboxMessage, Signature, SigningRequest, User
from app.runtime import Runtime
from app.services.ca import CertificateAuthorityService
from bench.enrol import mykad_for
from bench.scale_plans import BIG_TABLES
from tests.factories import DEFAULT_PIN

BATCH_ROWS = 20_000  # rows per executemany / COPY


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
