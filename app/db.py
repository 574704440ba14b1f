"""Engine, session factory, column types and the one commit point of a request."""

from __future__ import annotations

import logging
import re
import select as io_select
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    CTE,
    BindParameter,
    ColumnElement,
    DateTime,
    Delete,
    Engine,
    Insert,
    MetaData,
    Result,
    Select,
    String,
    Table,
    Update,
    bindparam,
    create_engine,
    event,
    exists,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.visitors import ExternallyTraversible, replacement_traverse
from sqlalchemy.types import TypeDecorator

from app.errors import DomainError

logger = logging.getLogger("roamsign.db")
T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant on every database.

    PostgreSQL keeps `timestamptz`; SQLite has no time zones, so the value is stored as naive UTC
    and comes back aware. Naive datetimes are refused on the way in: they are always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def status_constant(status: str) -> ColumnElement[str]:
    """A status written into the SQL text rather than sent as a parameter.

    Tables keep a long history of finished rows beside a few live ones: with the status as a
    parameter, PostgreSQL may settle on a generic plan (prepared statements) that cannot use
    the status to skip that history, and scans it all (seen with 1 million rows).

    Written in when the statement is compiled, not at each execution (`literal_execute`
    re-rendered the statement's text every time: 1 % of a worker's CPU). Statuses are our own
    constants, never input; the pattern keeps it so.
    """
    if not _STATUS.fullmatch(status):
        raise ValueError(f"not a status: {status!r}")
    # Text, not a `literal_column`: the ORM would take a column in a join's ON clause for one
    # of a table it could join from.
    return type_coerce(text(f"'{status}'"), String())


_STATUS = re.compile(r"[a-z][a-z_]*")


def insert_with_on_conflict(dialect: str, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take ON CONFLICT (the two databases we run on spell it alike)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"INSERT ... ON CONFLICT on {dialect}")


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    if url.startswith("sqlite"):
        return _make_sqlite_engine(url)
    # No overflow: an overflow connection is closed as soon as it is returned, so a busy
    # server opened and closed PostgreSQL connections (a backend process each) all the time;
    # the benchmark showed it as 40 % of a core outside the server. Connections open lazily,
    # up to `pool_size`, and stay open.
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=10)
    # No pre-ping (a round trip on every checkout, an eighth of a flow's): a connection the
    # server closed (a restart, pg_terminate_backend, a cut proxy) has a readable socket, its
    # end of stream, and is replaced at checkout without asking the server.
    event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any
) -> None:
    """An idle connection has nothing to read; anything there (the server's goodbye, its end
    of stream) means the server is done with it: the pool opens another (DisconnectionError)."""
    if dbapi_connection.closed or _readable(dbapi_connection.fileno()):
        raise DisconnectionError("the server closed this connection")


def _readable(fd: int) -> bool:
    poller = io_select.poll()
    poller.register(fd, io_select.POLLIN | io_select.POLLERR | io_select.POLLHUP)
    return bool(poller.poll(0))


def connection_capacity(engine: Engine) -> int:
    """How many connections the engine's pool hands out at once."""
    if engine.dialect.name == "sqlite":
        return 1
    return int(engine.pool.size())  # type: ignore[attr-defined]


def _make_sqlite_engine(url: str) -> Engine:
    database = url.split("///", 1)[-1]
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # One connection: SQLite admits one writer at a time anyway, and threads queueing fairly on
    # the pool beat threads racing SQLite's busy handler, which starves some of them for seconds.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 15},
        pool_size=1,
        max_overflow=0,
        pool_timeout=30,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY at the upgrade, which no busy timeout waits out.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine, info: dict[str, Any] | None = None) -> sessionmaker[Session]:
    """`info` is copied into each session's `Session.info` (e.g. the process's courier)."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=True, info=info)


_KEEP_CHANGES = "keep_changes"


def keep_changes(session: Session) -> None:
    """Commit this unit's writes although the refusal about to be raised ends it.

    A service calls it just before raising a refusal whose writes must survive it (a counted
    attempt, a PIN failure, a lockout, an audited refusal): commit the count, then refuse.
    """
    session.info[_KEEP_CHANGES] = True


def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, except that a `DomainError`
    raised after `keep_changes` is committed before it propagates."""
    session = factory()
    try:
        yield session
        session.commit()
        run_after_commit(session)
    except DomainError:
        if session.info.pop(_KEEP_CHANGES, False):
            session.commit()
            run_after_commit(session)
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# The same unit of work as a `with` block, for the CLI, jobs and tests.
unit_of_work = contextmanager(transaction)


@contextmanager
def single_statement_unit(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work of one statement, which is its own transaction: on PostgreSQL no BEGIN
    and no COMMIT (autocommit), two round trips of three. Only for a unit whose one statement
    holds all its writes (each further statement would commit on its own); SQLite runs it as
    any unit."""
    with unit_of_work(factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed (e.g. wake a worker)."""
    session.info.setdefault("after_commit", []).append(callback)


def run_after_commit(session: Session) -> None:
    for callback in session.info.pop("after_commit", []):
        callback()


# -- writes sent together ----------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """An INSERT, UPDATE or DELETE of a unit of work that nothing in the unit reads back: sent
    in one statement with others where the database allows it (`app.services.audit.log` sends
    a change's writes with its audit event), on its own otherwise.

    `statement` is prebuilt (module level: its combined forms are cached by identity): an
    `insert(table)` taking its columns from `params`, or an UPDATE or DELETE whose WHERE binds
    named parameters (`params` names them; any other key of `params` is a column an UPDATE
    SETs).
    `conflict` is raised, instead of the IntegrityError, when the write breaks a constraint
    of its table (losing a race for a unique row)."""

    statement: Insert | Update | Delete
    params: Mapping[str, Any]
    conflict: DomainError | None = None

    @property
    def table(self) -> Table:
        table: Table = self.statement.table  # type: ignore[assignment]
        return table


def send_writes(session: Session, writes: Sequence[Write]) -> None:
    """`writes` in sequence, on their own (no statement to go with), a conflict raised as its
    `Write.conflict` says."""
    connection = session.connection()
    try:
        for write in writes:
            connection.execute(write.statement, write.params)
    except IntegrityError as error:
        raise_conflict(error, writes)
        raise


def guarded_writes(writes: Sequence[Write], guard: CTE) -> list[Insert | Update | Delete]:
    """PostgreSQL: `writes` as statements for a data-modifying WITH, each done only if `guard`
    (a CTE) returns a row, their parameters prefixed `w<index>_` (see `prefixed_params`)."""
    return _GUARDED.get_or_build(
        (guard, *(write.statement for write in writes)),
        tuple(tuple(write.params) for write in writes),
        lambda: [_guarded(write, f"w{index}_", guard) for index, write in enumerate(writes)],
    )


def select_after_writes(
    session: Session,
    query: Executable,
    params: Mapping[str, Any],
    writes: Sequence[Write],
    *,
    core: bool = False,
) -> Result[Any]:
    """`writes`, then `query`: in one statement on PostgreSQL (`query` with the writes in its
    WITH; it reads the rows as they were before them), in sequence on SQLite. For writes
    whose rows `query` does not read. `core`: `query` selects table columns only, run on the
    session's connection (the ORM's statement handling costs more than such a read)."""
    run = session.connection().execute if core else session.execute
    if session.get_bind().dialect.name != "postgresql":
        for write in writes:
            session.connection().execute(write.statement, write.params)
        return run(query, params)

    def combine() -> Executable:
        ctes = [
            _guarded(write, f"w{index}_", None).cte(f"w{index}")
            for index, write in enumerate(writes)
        ]
        assert isinstance(query, Select)
        return query.add_cte(*ctes)

    combined = _WITH_WRITES.get_or_build(
        (query, *(write.statement for write in writes)),
        tuple(tuple(write.params) for write in writes),
        combine,
    )
    return run(combined, {**params, **prefixed_params(writes)})


def prefixed_params(writes: Sequence[Write]) -> dict[str, Any]:
    return {
        f"w{index}_{name}": value
        for index, write in enumerate(writes)
        for name, value in write.params.items()
    }


def raise_conflict(error: IntegrityError, writes: Sequence[Write]) -> None:
    """Raise the conflict of the write whose table `error` names (PostgreSQL's diagnostics, or
    SQLite's message), if it has one."""
    diagnostics = getattr(error.orig, "diag", None)
    table_name = getattr(diagnostics, "table_name", None)
    for write in writes:
        if write.conflict is None:
            continue
        name = write.table.name
        if table_name == name or (table_name is None and f" {name}." in str(error.orig)):
            raise write.conflict from None


class CombinedStatements(Generic[T]):
    """Statements combined from prebuilt ones (building and compiling a combination costs more
    than running it), keyed by the parts' identity. An entry keeps its parts alive, so no other
    object can take a part's id while the entry stands (a freed statement's id reused by a new
    one would return the wrong SQL). Parts are meant to be built once, at module level; parts
    built per call would fill the cache, so past `limit` entries a combination is built and not
    kept."""

    def __init__(self, limit: int = 512) -> None:
        self._entries: dict[tuple[Any, ...], tuple[tuple[object, ...], T]] = {}
        self._limit = limit

    def get_or_build(
        self, parts: tuple[object, ...], shape: tuple[Any, ...], build: Callable[[], T]
    ) -> T:
        key = (*(id(part) for part in parts), shape)
        entry = self._entries.get(key)
        if entry is not None:
            return entry[1]
        built = build()
        if len(self._entries) < self._limit:
            self._entries[key] = (parts, built)
        return built


_GUARDED: CombinedStatements[list[Insert | Update | Delete]] = CombinedStatements()
_WITH_WRITES: CombinedStatements[Executable] = CombinedStatements()


def _guarded(write: Write, prefix: str, guard: CTE | None) -> Insert | Update | Delete:
    table = write.table
    # EXISTS (SELECT * ...): no parameter (a SELECT 1 binds its 1, and psycopg parses a
    # statement of over 50 parameters again on every execution).
    exists_guard = exists().select_from(guard) if guard is not None else true()
    statement = write.statement
    if isinstance(statement, Insert):
        columns = list(write.params)
        values = select(
            *(bindparam(prefix + name, type_=table.c[name].type) for name in columns)
        ).where(exists_guard)
        # From the statement itself: it keeps its ON CONFLICT clause, if it has one.
        return statement.from_select(columns, values)
    bound: set[str] = set()

    def rename(element: ExternallyTraversible, **_kw: Any) -> ExternallyTraversible | None:
        # Named parameters only: an anonymous one (a value written in the statement, such as
        # `values(sealed_message=None)`) keeps its value and a name unique in any statement.
        if isinstance(element, BindParameter) and not element.unique:
            bound.add(element.key)
            return bindparam(prefix + element.key, type_=element.type)
        return None

    renamed = replacement_traverse(cast(ExternallyTraversible, statement), {}, rename)
    if isinstance(renamed, Delete):
        return renamed.where(exists_guard) if guard is not None else renamed
    assert isinstance(renamed, Update)
    settable = {
        name: bindparam(prefix + name, type_=table.c[name].type)
        for name in write.params
        if name not in bound
    }
    if settable:
        renamed = renamed.values(settable)
    return renamed.where(exists_guard) if guard is not None else renamed


# -- notifications between processes -------------------------------------------------------------


class NotificationListener:
    """Listens on a PostgreSQL channel (`LISTEN`) on a connection of its own, in a daemon
    thread, and calls `on_change` for each notification and whenever it may have missed some
    (a new connection, a lost one). `listening()` says whether notifications reach it now: a
    cache it invalidates must not be trusted otherwise. It checks its connection every
    `check_seconds` (a notification cannot arrive on a connection that silently died)."""

    def __init__(
        self,
        connect_args: tuple[list[Any], dict[str, Any]],
        channel: str,
        on_change: Callable[[], None],
        *,
        check_seconds: float = 2.0,
    ) -> None:
        self._connect_args = connect_args
        self._channel = channel
        self._on_change = on_change
        self._check_seconds = check_seconds
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.backend_pid: int | None = None  # its server process, while connected

    def listening(self) -> bool:
        return self._listening.is_set()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"listen-{self._channel}", daemon=True
                )
                self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        if self._listening.is_set():
            self._wake()
        thread.join(timeout=5)

    def _wake(self) -> None:
        """End the thread's wait for a notification now, not `check_seconds` later (a process
        stopping, or a test's runtime: every test paid up to that much): a notification on its
        own channel. Every listener on the channel refreshes its cache once: harmless."""
        import psycopg

        try:
            args, kwargs = self._connect_args
            with psycopg.connect(*args, **{**kwargs, "autocommit": True}) as connection:
                connection.execute(f'NOTIFY "{self._channel}"')
        except Exception:
            # The join's bound still ends the wait.
            logger.debug("db.listener.wake_failed", extra={"channel": self._channel})

    def _run(self) -> None:
        import psycopg  # only PostgreSQL deployments listen

        pause = 0.1
        while not self._stop.is_set():
            try:
                args, kwargs = self._connect_args
                with psycopg.connect(*args, **{**kwargs, "autocommit": True}) as connection:
                    connection.execute(f'LISTEN "{self._channel}"')
                    self.backend_pid = connection.info.backend_pid
                    self._on_change()  # whatever happened while nobody listened
                    self._listening.set()
                    pause = 0.1
                    while not self._stop.is_set():
                        for _notification in connection.notifies(
                            timeout=self._check_seconds, stop_after=1
                        ):
                            self._on_change()
                        connection.execute("SELECT 1")  # still there?
            except Exception:
                logger.warning("db.listener.lost", extra={"channel": self._channel})
            finally:
                self._listening.clear()
                self._on_change()
            self._stop.wait(pause)
            pause = min(pause * 2, 5.0)


def connect_arguments(engine: Engine) -> tuple[list[Any], dict[str, Any]]:
    """What the engine's driver connects with (for a connection outside its pool)."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    return list(args), dict(kwargs)
