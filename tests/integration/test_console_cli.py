"""`python -m app admins grant|revoke|list`: console roles as an operator grants them (run
in-process: `app.cli.main` on the test database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.cli import main
from app.models import AuditEvent, ConsoleAdministrator
from app.settings import Settings, get_settings
from tests.factories import Factory

Admins = Callable[..., tuple[str, str]]


@pytest.fixture
def admins(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Admins]:
    monkeypatch.setenv("ROAMSIGN_PROFILE", "production")
    monkeypatch.setenv("ROAMSIGN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ROAMSIGN_MASTER_KEY_FILE", str(settings.master_key_file))
    monkeypatch.setenv("ROAMSIGN_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()

    def run(*args: str, expect: int = 0) -> tuple[str, str]:
        assert main(["admins", *args]) == expect
        captured = capsys.readouterr()
        return captured.out, captured.err

    yield run
    get_settings.cache_clear()


def test_roles_are_granted_listed_and_revoked_with_an_audit_trail(
    admins: Admins, factory: Factory, sessions: sessionmaker[Session]
) -> None:
    person = factory.person(agency="JPA", roaming=False)

    _, err = admins("grant", person.mykad, "--role", "agency_admin", "--agency", "JDN", expect=1)
    assert "belongs to agency 'JPA', not 'JDN'" in err
    _, err = admins("grant", person.mykad, "--role", "agency_admin", expect=1)
    assert "bound to one agency" in err
    _, err = admins("grant", person.mykad, "--role", "jdn_admin", "--agency", "JPA", expect=1)
    assert "bound to no agency" in err
    _, err = admins("grant", "850101145555", "--role", "jdn_admin", expect=1)
    assert "no such person" in err

    out, _ = admins("grant", person.mykad, "--role", "agency_admin", "--agency", "JPA")
    assert "agency_admin of agency JPA" in out and person.mykad not in out  # masked
    out, _ = admins("list")
    assert person.mykad in out and "agency_admin" in out and "JPA" in out

    admins("revoke", person.mykad)
    _, err = admins("revoke", person.mykad, expect=1)
    assert "holds no console role" in err
    with sessions() as session:
        assert session.get(ConsoleAdministrator, person.user_id) is None
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.actor == "cli", AuditEvent.target_id == person.user_id)
            .order_by(AuditEvent.id)
        ).all()
    assert actions == ["console.role_granted", "console.role_revoked"]
