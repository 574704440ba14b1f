"""Shared fixtures: a real database (SQLite or PostgreSQL), a frozen clock, derived keys, an SMTP
sink, and a runtime (with a factory of clients, people and credentials) on that database.

`ROAMSIGN_TEST_DATABASE` picks the database: `sqlite` (default), `postgresql` (a temporary
server this run starts itself), or a full SQLAlchemy URL. The schema is built by Alembic.

`ROAMSIGN_TEST_KEY_STORE` picks the key store: `software` (default) or `pkcs11`, one SoftHSM2
token for the whole run, put in this process's environment (ROAMSIGN_KEY_STORE and the
ROAMSIGN_PKCS11_* settings), so that every `Settings` the tests build, and every CLI and server
process they start, keeps its keys in it (`make test` runs the signing, CSC, lifecycle, race
and e2e tests so).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

import app.models  # noqa: F401 - registers the tables
from app.clock import FrozenClock
from app.crypto.keys import DerivedKeys, Secrets, software_secrets
from app.db import Base, make_engine, make_sessionmaker
from app.migrate import upgrade
from app.runtime import Runtime, build_key_store
from app.services.mail.sink import MailSink
from app.settings import Settings, write_master_key
from tests.factories import Factory

if TYPE_CHECKING:
    from tests.pg_server import TemporaryPostgres

TEST_DATABASE = os.environ.get("ROAMSIGN_TEST_DATABASE", "sqlite")
TEST_KEY_STORE = os.environ.get("ROAMSIGN_TEST_KEY_STORE", "software")


def pytest_report_header() -> str:
    return f"roamsign test database: {TEST_DATABASE}, key store: {TEST_KEY_STORE}"


@pytest.fixture(scope="session", autouse=True)
def test_key_store(tmp_path_factory: pytest.TempPathFactory, master_key: bytes) -> Iterator[str]:
    """The run's key store (see the module docstring); with `pkcs11`, its token is made once,
    with its key-encryption key, before any test."""
    if TEST_KEY_STORE == "software":
        yield TEST_KEY_STORE
        return
    if TEST_KEY_STORE != "pkcs11":
        raise pytest.UsageError("ROAMSIGN_TEST_KEY_STORE is `software` or `pkcs11`")
    from app.crypto.pkcs11_secrets import provision_token_secrets
    from tests.softhsm import create_token, ensure_softhsm

    token = create_token(tmp_path_factory.mktemp("softhsm"), ensure_softhsm(), "roamsign-tests")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in token.environment().items():
            patch.setenv(name, value)
        store = build_key_store(Settings())
        store.self_test()  # makes the key-encryption key before processes race to
        # The run's secrets as a migrated deployment has them: imported from the master key the
        # tests' own fixtures derive theirs from (`keys`), so both compute the same MACs.
        data_key = tmp_path_factory.mktemp("data-key") / "outbox-seal.wrapped-key"
        patch.setenv("ROAMSIGN_PKCS11_DATA_KEY_FILE", str(data_key))
        provision_token_secrets(store, DerivedKeys.from_master(master_key), data_key)
        store.close()
        yield TEST_KEY_STORE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgres_only` tests (row locks across transactions, several processes) run in the
    PostgreSQL pass of `make test`; the SQLite pass deselects them rather than skipping."""
    if TEST_DATABASE != "sqlite":
        return
    kept = [item for item in items if item.get_closest_marker("postgres_only") is None]
    deselected = [item for item in items if item.get_closest_marker("postgres_only") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres | None]:
    """The run's own PostgreSQL server (`ROAMSIGN_TEST_DATABASE=postgresql`), else None."""
    if TEST_DATABASE != "postgresql":
        yield None
        return
    from tests.pg_server import TemporaryPostgres

    with TemporaryPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def database_url(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: TemporaryPostgres | None
) -> Iterator[str]:
    if TEST_DATABASE == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'roamsign.db'}"
        upgrade(url)
        yield url
    elif postgres_server is not None:
        upgrade(postgres_server.url)
        yield postgres_server.url
    else:
        upgrade(TEST_DATABASE)
        yield TEST_DATABASE


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def wipe(engine: Engine) -> None:
    """Every row gone and the id counters back at 1, as after a migration.

    TRUNCATE on PostgreSQL, though deleting the few rows a test leaves takes 2 ms against its
    60: after DELETE, autovacuum lets new rows reuse old pages, so rows without an ORDER BY
    come back in another order, and tests that (wrongly) relied on it failed now and then."""
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on a clean database (every table emptied after the test)."""
    yield make_sessionmaker(engine)
    wipe(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as sink:
        yield sink


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="session")
def master_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture(scope="session")
def keys(master_key: bytes) -> Secrets:
    return software_secrets(DerivedKeys.from_master(master_key))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path: Path, database_url: str, master_key: bytes) -> Settings:
    key_file = tmp_path / "master.key"
    write_master_key(key_file, master_key)
    return Settings(
        profile="production",
        database_url=database_url,
        master_key_file=key_file,
        var_dir=tmp_path,
        delivery_worker=False,
        log_json=False,
    )


@contextlib.contextmanager
def runtime_on_test_engine(
    settings: Settings, clock: FrozenClock, sessions: sessionmaker[Session], engine: Engine
) -> Iterator[Runtime]:
    """A runtime of `settings` on the test's engine (and so its wipe)."""
    runtime = Runtime.build(settings, clock)
    runtime.engine.dispose()
    runtime.engine, runtime.sessions = engine, sessions
    try:
        yield runtime
    finally:
        runtime.stop_listening()
        runtime.key_store.close()


@pytest.fixture
def runtime(
    settings: Settings, clock: FrozenClock, sessions: sessionmaker[Session], engine: Engine
) -> Iterator[Runtime]:
    with runtime_on_test_engine(settings, clock, sessions, engine) as runtime:
        yield runtime


@pytest.fixture
def factory(runtime: Runtime) -> Factory:
    factory = Factory(runtime)
    factory.init_ca()
    return factory


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(
    database_url: str, master_key: bytes, tmp_path: Path, sessions: sessionmaker[Session]
) -> Cli:
    """`python -m app ARGS` as an operator runs it, on the test database: `cli("audit",
    "verify", expect=1)` asserts the exit code and returns the completed process."""
    key_file = tmp_path / "master.key"
    write_master_key(key_file, master_key)
    env = {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": database_url,
        "ROAMSIGN_MASTER_KEY_FILE": str(key_file),
        "ROAMSIGN_VAR_DIR": str(tmp_path),
    }

    def run(*args: str, stdin: str = "", expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == expect, done.stdout + done.stderr
        return done

    return run
