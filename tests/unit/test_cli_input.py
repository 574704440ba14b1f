"""What an operator types is held to the rules the API holds the same input to, before any
database is opened."""

from __future__ import annotations

import pytest

from app.cli import main


@pytest.mark.parametrize("hidden", ["\u202e", "\u2066", "\u200b", "\ufeff", "\x1b"])
def test_a_client_name_or_agency_with_hidden_characters_is_refused(
    hidden: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["clients", "create", f"igfmas{hidden}", "--role", "signer"],
        ["clients", "create", "sa", "--role", "agency_admin", "--agency", f"JDN{hidden}"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "characters" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["--name", "--agency"])
def test_a_person_name_or_agency_with_hidden_characters_is_refused(
    field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["users", "create", "--mykad", "850101145555", "--name", "Aisyah", "--agency", "JDN"]
    argv[argv.index(field) + 1] += "\u202e"
    assert main(argv) == 1
    assert "direction-changing" in capsys.readouterr().err
