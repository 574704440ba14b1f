"""The lifecycle commands as an operator runs them: bulk enrolment from CSV, credentials, jobs."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.clock import SystemClock
from app.db import unit_of_work
from app.models import ApiClient, Credential, OutboxMessage, RoamingApplication, SigningRequest
from app.models.base import new_id
from app.runtime import Runtime
from app.settings import Settings, write_master_key
from tests.factories import Factory

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, master_key: bytes) -> Settings:
    key_file = tmp_path / "master.key"
    write_master_key(key_file, master_key)
    return Settings(
        profile="production",
        database_url=database_url,
        master_key_file=key_file,
        var_dir=tmp_path,
        smtp_port=1,  # nothing listens: `jobs run` leaves the mail queued
    )


@pytest.fixture
def factory(
    settings: Settings, engine: Engine, sessions: sessionmaker[Session]
) -> Iterator[Factory]:
    runtime = Runtime.build(settings, SystemClock())
    runtime.engine.dispose()
    runtime.engine, runtime.sessions = engine, sessions
    factory = Factory(runtime)
    factory.init_ca()
    yield factory


@pytest.fixture
def cli(settings: Settings) -> Cli:
    env = {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": settings.database_url,
        "ROAMSIGN_MASTER_KEY_FILE": str(settings.master_key_file),
        "ROAMSIGN_VAR_DIR": str(settings.var_dir),
        "ROAMSIGN_SMTP_PORT": "1",
    }

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == expect, done.stdout + done.stderr
        return done

    return run


def report_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_enrol_from_a_csv_file_reports_each_person_and_is_idempotent(
    cli: Cli, factory: Factory, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    first = factory.token_user(email="first@jdn.gov.my")
    second = factory.token_user(email="second@jdn.gov.my")
    roaming = factory.person(email="roaming@jdn.gov.my")
    no_email = factory.token_user(email=None)
    source = tmp_path / "token-users.csv"
    source.write_text(
        "name,mykad,agency\n"
        f"First,{first.mykad},JDN\n"
        f"Second,{second.mykad[:6]}-{second.mykad[6:8]}-{second.mykad[8:]},JDN\n"
        "\n"
        f"Roaming,{roaming.mykad},JDN\n"
        "Nobody,991231019999,JDN\n"
        "Typo,85010114555,JDN\n"
        f"Silent,{no_email.mykad},JDN\n"
    )
    done = cli("enrol", "--csv", str(source), "--batch-size", "2")
    rows = report_rows(done.stdout)
    assert [(r["mykad"], r["outcome"]) for r in rows] == [
        (first.mykad, "enrolled"),
        (second.mykad, "enrolled"),
        (roaming.mykad, "already_roaming"),
        ("991231019999", "unknown_person"),
        ("85010114555", "invalid_mykad"),
        (no_email.mykad, "no_email"),
    ]
    assert all(r["application_id"] for r in rows[:2])
    assert "6/6" in done.stderr and "100%" in done.stderr  # the progress bar
    assert "enrolled 2" in done.stderr
    assert count(sessions, RoamingApplication) == 2
    queued = count(sessions, OutboxMessage)

    report = tmp_path / "report.csv"
    again = cli("enrol", "--csv", str(source), "--report", str(report))
    assert again.stdout == ""
    rows_again = report_rows(report.read_text())
    assert [r["outcome"] for r in rows_again[:2]] == ["already_enrolled"] * 2
    assert [r["application_id"] for r in rows_again[:2]] == [r["application_id"] for r in rows[:2]]
    assert count(sessions, RoamingApplication) == 2
    assert count(sessions, OutboxMessage) == queued


def test_a_file_without_a_header_is_read_from_its_first_column(
    cli: Cli, factory: Factory, tmp_path: Path
) -> None:
    person = factory.token_user()
    source = tmp_path / "plain.csv"
    source.write_text(f"{person.mykad},anything\n")
    rows = report_rows(cli("enrol", "--csv", str(source)).stdout)
    assert [(r["mykad"], r["outcome"]) for r in rows] == [(person.mykad, "enrolled")]
    cli("enrol", "--csv", str(tmp_path / "missing.csv"), expect=1)
    cli("enrol", "--csv", str(source), "--batch-size", "0", expect=2)


def test_credential_commands(cli: Cli, factory: Factory, sessions: sessionmaker[Session]) -> None:
    person = factory.person()
    assert person.credential_id is not None
    recorded = cli(
        "credentials",
        "record-token",
        person.mykad,
        "--serial",
        "TKN-1",
        "--expires-at",
        "2027-06-30T23:59:59Z",
    )
    token_id = recorded.stdout.strip().splitlines()[-1]
    listing = cli("credentials", "list", person.mykad).stdout
    assert person.credential_id in listing and token_id in listing and "TKN-1" in listing

    cli("credentials", "unlock", person.credential_id, expect=1)  # not locked
    renewed = cli("credentials", "renew", person.credential_id, "--key-algorithm", "rsa-2048")
    renewed_id = renewed.stdout.strip().splitlines()[-1]
    revoked = cli("credentials", "revoke", person.credential_id, "--reason", "keyCompromise")
    assert "revoked" in revoked.stdout
    cli("credentials", "revoke", person.credential_id, "--reason", "bogus", expect=2)
    with sessions() as session:
        new = session.get(Credential, renewed_id)
        old = session.get(Credential, person.credential_id)
        assert new is not None and new.status == "pending_pin" and new.key_algorithm == "rsa-2048"
        assert old is not None and old.status == "revoked" and old.key_blob is None


def test_jobs_run_runs_the_due_jobs_once(
    cli: Cli, factory: Factory, sessions: sessionmaker[Session]
) -> None:
    person = factory.person()
    factory.client("igfmas", "signer")
    long_ago = datetime.now(UTC) - timedelta(days=100)
    with unit_of_work(sessions) as session:
        session.add(
            SigningRequest(
                id=new_id(),
                signer_id=session.scalars(select(ApiClient.id)).one(),
                user_id=person.user_id,
                credential_id=person.credential_id,
                document_hash="00" * 32,
                hash_algorithm="sha256",
                document_name="PV",
                channel="email",
                destination="a***@jdn.gov.my",
                signature_format="cms",
                otp_mac=b"\0" * 32,
                status="cancelled",
                attempts=0,
                created_at=long_ago,
                expires_at=long_ago + timedelta(minutes=2),
            )
        )
    first = cli("jobs", "run").stdout
    assert "expiry_notices: expiry notices: 0 queued" in first
    assert "retention: retention: deleted 0 device_messages, 1 signing_requests, " in first
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(SigningRequest)) == 0
    assert "e-mail delivery:" in first
    second = cli("jobs", "run").stdout
    assert "expiry_notices: not due or running" in second
    assert "retention: not due or running" in second
