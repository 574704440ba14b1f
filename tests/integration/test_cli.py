"""`python -m app ...` as an operator runs it, on the suite's database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from app.models import ApiClient, AuditEvent, Credential, User
from app.settings import write_master_key
from tests.conftest import Cli


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1]


def test_operator_commands_end_to_end(cli: Cli, sessions: sessionmaker[Session]) -> None:
    assert "CA created" in cli("ca", "init").stdout
    assert "already initialised" in cli("ca", "init").stdout  # idempotent
    assert "already up to date" in cli("ca", "upgrade").stdout

    key = last_line(cli("clients", "create", "igfmas", "--role", "signer"))
    assert key.startswith("rsk_") and len(key) > 40
    cli("clients", "create", "igfmas", "--role", "signer", expect=1)  # names are unique
    rotated = last_line(cli("clients", "rotate", "igfmas"))
    assert rotated != key
    cli("clients", "revoke", "igfmas")
    cli("clients", "create", "sa", "--role", "agency_admin", expect=1)  # needs --agency

    cli(
        "users",
        "create",
        "--mykad",
        "850101-14-5555",
        "--name",
        "Nur Aisyah binti Ahmad",
        "--email",
        "aisyah@jdn.gov.my",
        "--phone",
        "012-345 6789",
        "--agency",
        "JDN",
    )
    cli("users", "create", "--mykad", "851301145555", "--name", "X", "--agency", "JDN", expect=1)
    cli("credentials", "issue", "850101145555", stdin="123456\n", expect=1)  # trivial PIN
    credential_id = last_line(
        cli("credentials", "issue", "850101145555", "--key-algorithm", "rsa-2048", stdin="583920\n")
    )

    with sessions() as session:
        client = session.scalars(select(ApiClient)).one()
        assert client.revoked_at is not None and key not in client.key_hash
        user = session.scalars(select(User)).one()
        assert user.mykad == "850101145555" and user.phone == "+60123456789"
        credential = session.get(Credential, credential_id)
        assert credential is not None and credential.status == "active"
        assert credential.key_algorithm == "rsa-2048" and credential.pin_mac is not None
        assert b"583920" not in credential.pin_mac
    assert "intact" in cli("audit", "verify").stdout


def test_audit_verify_names_the_first_broken_event(
    cli: Cli, sessions: sessionmaker[Session]
) -> None:
    cli("ca", "init")
    cli("clients", "create", "igfmas", "--role", "signer")
    cli("clients", "create", "eperolehan", "--role", "signer")
    with sessions.begin() as session:
        first = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).first()
        assert first is not None
        session.execute(
            text("UPDATE audit_events SET outcome = 'tampered' WHERE id = :id"), {"id": first.id}
        )
    broken = cli("audit", "verify", expect=1)
    assert f"event_id={first.id}" in broken.stderr


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path, master_key: bytes) -> None:
    key_file = tmp_path / "master.key"
    write_master_key(key_file, master_key)
    env = {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": f"sqlite:///{tmp_path / 'one.db'}",
        "ROAMSIGN_MASTER_KEY_FILE": str(key_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1 and "PostgreSQL" in done.stderr


def test_production_refuses_a_missing_master_key(
    cli: Cli, tmp_path: Path, database_url: str
) -> None:
    env = {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": database_url,
        "ROAMSIGN_VAR_DIR": str(tmp_path),
    }
    env.pop("ROAMSIGN_MASTER_KEY_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "app", "ca", "init"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "MASTER_KEY_FILE" in done.stderr


def test_a_master_key_file_others_can_read_stops_the_process(
    tmp_path: Path, database_url: str, master_key: bytes
) -> None:
    key_file = tmp_path / "master.key"
    write_master_key(key_file, master_key)
    key_file.chmod(0o644)
    env = {
        **os.environ,
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": database_url,
        "ROAMSIGN_VAR_DIR": str(tmp_path),
        "ROAMSIGN_MASTER_KEY_FILE": str(key_file),
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "ca", "init"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: ROAMSIGN_MASTER_KEY_FILE {key_file} is open to group or others (mode 0644): "
        f"chmod 600 {key_file}"
    )


def test_demo_refuses_to_run_unless_the_profile_is_demo(cli: Cli) -> None:
    refused = cli("demo", expect=1)
    assert "ROAMSIGN_PROFILE=demo" in refused.stderr
