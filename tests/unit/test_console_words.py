"""Every word the console shows exists in both languages: a missing key would be a 500."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.models import ApplicationStatus, ConsoleRole, CredentialStatus, Medium
from app.routers.pages.i18n import MESSAGES
from app.services.lifecycle.bulk_enrolment import EnrolmentOutcome
from app.services.lifecycle.credentials import EXPIRED, REVOCATION_REASONS
from app.services.web.console_applications import Waiting

APP = Path(__file__).resolve().parents[2] / "app"
KEY = re.compile(r"""["']((?:console|signin|csrf|error)\.[A-Za-z0-9_.]+|not_found|refused)["']""")


def test_every_key_a_console_template_or_router_names_exists() -> None:
    files = [*(APP / "templates" / "console").glob("*.html")]
    files += [*(APP / "routers" / "pages").glob("console*.py")]
    named = {key for path in files for key in KEY.findall(path.read_text())}
    # Prefixes completed at run time (`"console.status." ~ c.status`) are checked below.
    named = {key for key in named if not key.endswith((".", "_"))}
    assert named, "no keys found: the pattern is wrong"
    assert sorted(key for key in named if key not in MESSAGES) == []


@pytest.mark.parametrize(
    ("prefix", "values"),
    [
        ("console.status.", [*CredentialStatus, EXPIRED]),
        ("console.medium.", list(Medium)),
        ("console.reason.", list(REVOCATION_REASONS)),
        ("console.outcome.", list(EnrolmentOutcome)),
        ("console.waiting.", list(Waiting)),
        ("console.origin.", ["portal", "jdn_admin", "enrolment"]),
        ("console.application_status.", list(ApplicationStatus)),
        ("console.role.", list(ConsoleRole)),
        ("console.home.role_", list(ConsoleRole)),
    ],
)
def test_every_value_shown_through_a_key_has_its_words(prefix: str, values: list[str]) -> None:
    assert [value for value in values if f"{prefix}{value}" not in MESSAGES] == []


def test_every_console_message_has_both_languages() -> None:
    for key, (malay, english) in MESSAGES.items():
        if key.startswith("console."):
            assert malay.strip() and english.strip(), key
