"""What a benchmark runs against: a fresh migrated database, the SMTP sink, the people seeded
through the real services, and `python -m app serve` (tests/harness.py) tuned for load."""

from __future__ import annotations

import contextlib
from pathlib import Path

from app.clock import SystemClock
from app.migrate import upgrade
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from app.settings import Settings
from bench.harness.flows import Mailbox
from tests.factories import Factory, Person
from tests.harness import Server, serve, serve_environment
from tests.mobile_app import MobileApp
from tests.pg_server import TemporaryPostgres

SQLITE_FILE = "roamsign.db"
MAX_PEOPLE = 9999  # tests.factories makes MyKads 90010114NNNN


def bench_environment(
    *, database_url: str, key_file: Path, var_dir: Path, smtp_port: int, **overrides: str
) -> dict[str, str]:
    """`serve_environment` for a benchmark's server: warnings only, the OTP limits far past
    any rate driven; `overrides` last."""
    return serve_environment(
        database_url=database_url,
        key_file=key_file,
        var_dir=var_dir,
        smtp_port=smtp_port,
        ROAMSIGN_LOG_LEVEL="WARNING",
        # A benchmark signs for a few people as fast as it can: far past the abuse limits.
        ROAMSIGN_OTPS_PER_PERSON_PER_MINUTE="1000000",
        ROAMSIGN_OTPS_PER_SIGNER_PERSON_PER_MINUTE="1000000",
        ROAMSIGN_OTPS_PER_SIGNER_PER_MINUTE="1000000",
        **overrides,
    )


def start_server(
    *, database_url: str, key_file: Path, var_dir: Path, smtp_port: int, workers: int
) -> Server:
    env = bench_environment(
        database_url=database_url, key_file=key_file, var_dir=var_dir, smtp_port=smtp_port
    )
    return serve(env, var_dir, workers)


def seed(settings: Settings, people: int) -> tuple[str, list[Person]]:
    """The CA, one signer API client and `people` people with ECDSA P-256 roaming credentials."""
    runtime = Runtime.build(settings, SystemClock())
    try:
        factory = Factory(runtime)
        factory.init_ca()
        key = factory.client("bench-signer", "signer")
        made = [
            factory.person(
                name=f"Bench Person {i}",
                email=f"bench{i}@jdn.gov.my",
                key_algorithm="ecdsa-p256",
            )
            for i in range(people)
        ]
    finally:
        runtime.close()
    return key, made


def seed_devices(settings: Settings, people: list[Person]) -> dict[str, MobileApp]:
    """An active MyGPKI Mobile device for each person, registered and activated through the
    real services (`Factory.mobile_device`), as the simulated app holding its private key;
    by MyKad. The registrations all come from one client address ("factory"): its limit per
    address is raised for the seeding (the server's own settings are untouched)."""
    seeding = settings.model_copy(update={"device_registrations_per_address": max(len(people), 1)})
    runtime = Runtime.build(seeding, SystemClock())
    try:
        factory = Factory(runtime)
        return {person.mykad: factory.mobile_device(person) for person in people}
    finally:
        runtime.close()


def open_sink_and_database(
    database: str, directory: Path, stack: contextlib.ExitStack
) -> tuple[Mailbox, MailSink, str, TemporaryPostgres | None]:
    """An SMTP sink feeding a `Mailbox`, and a fresh migrated database (SQLite under
    `directory`, or a private PostgreSQL); both stopped by `stack`. Returns the database URL
    and the PostgreSQL server, if any."""
    mailbox = Mailbox()
    sink = MailSink(None, on_message=mailbox.on_message).start()
    stack.callback(sink.stop)
    pg: TemporaryPostgres | None = None
    if database == "postgresql":
        pg = TemporaryPostgres().start()
        stack.callback(pg.stop)
        url = pg.url
    else:
        url = f"sqlite:///{directory / SQLITE_FILE}"
    upgrade(url)
    return mailbox, sink, url, pg
