"""The lifecycle e-mails' texts and the one-time token's MAC: pure functions."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.crypto.keys import SoftwareMacKey
from app.services.lifecycle.tokens import generate_token, token_mac
from app.services.mail.notices import Notice
from app.services.mail.texts.alerts import (
    CredentialLockedNotice,
    CredentialRevokedNotice,
    EmailChangedNotice,
    ExpiryNotice,
    PinChangedNotice,
)
from app.services.mail.texts.common import timestamp
from app.services.mail.texts.signing import SigningNotice
from app.services.mail.texts.tokens import (
    ApplicationVerificationNotice,
    EmailChangeNotice,
    PinResetNotice,
    PinSetupNotice,
)

WHEN = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
TOKEN = "q3Zr-9xY_0aB1cD2eF3gH4iJ5kL6mN7o"
ID = "6f1c2b0e-51b8-4c1e-9d1e-0c6a3e5b7a10"
BASE = "https://roamsign.jdn.gov.my/"
KL = ZoneInfo("Asia/Kuala_Lumpur")

WITH_TOKEN: list[Notice] = [
    ApplicationVerificationNotice(TOKEN, "Nur Aisyah", WHEN, ID),
    PinSetupNotice(TOKEN, "Nur Aisyah", "5f0c3ad4", WHEN, ID),
    PinSetupNotice(TOKEN, "Nur Aisyah", "5f0c3ad4", WHEN, ID, is_renewal=True),
    PinResetNotice(TOKEN, "Nur Aisyah", WHEN, ID),
    EmailChangeNotice(TOKEN, "Nur Aisyah", WHEN),
]
WITHOUT_TOKEN: list[Notice] = [
    EmailChangedNotice("Nur Aisyah", "n***@mof.gov.my", WHEN),
    PinChangedNotice("Nur Aisyah", WHEN, ID),
    CredentialLockedNotice("Nur Aisyah", WHEN, ID),
    SigningNotice("Baucar Bayaran PV-2026-000123", "igfmas", WHEN, ID),
    CredentialRevokedNotice("Nur Aisyah", "5f0c3ad4", WHEN, "keyCompromise"),
    ExpiryNotice("Nur Aisyah", "5f0c3ad4", WHEN),
]


@pytest.mark.parametrize("notice", WITH_TOKEN, ids=lambda n: type(n).__name__)
def test_a_token_comes_first_on_its_own_line(notice: Notice) -> None:
    lines = notice.body(KL).splitlines()
    assert lines[0] == f"Token: {TOKEN}"
    assert notice.body(KL).count(TOKEN) == 1


@pytest.mark.parametrize("notice", WITH_TOKEN + WITHOUT_TOKEN, ids=lambda n: type(n).__name__)
def test_bilingual_malay_then_english_with_a_purposeful_subject(notice: Notice) -> None:
    subject = notice.subject()
    malay, _, english = subject.partition(" / ")
    assert malay and english and "\n" not in subject
    body = notice.body(KL)
    malay_marker = min(body.find(word) for word in ("Kepada", "Dokumen") if body.find(word) >= 0)
    english_marker = min(body.find(word) for word in ("Dear", "The following") if word in body)
    assert 0 <= malay_marker < english_marker
    assert "2026-11-27 18:00:00 (UTC+08:00, Asia/Kuala_Lumpur)" in body


@pytest.mark.parametrize("notice", WITHOUT_TOKEN, ids=lambda n: type(n).__name__)
def test_notices_without_a_token_carry_no_token_line(notice: Notice) -> None:
    assert not re.search(r"^Token:", notice.body(KL), re.MULTILINE)


def test_the_signing_notice_names_the_document_the_system_and_the_time() -> None:
    body = SigningNotice("Tender QT-2026-0042", "eperolehan", WHEN, ID).body(KL)
    assert "Dokumen: Tender QT-2026-0042" in body and "Document: Tender QT-2026-0042" in body
    assert "Sistem yang meminta: eperolehan" in body and "Requesting system: eperolehan" in body
    when = "2026-11-27 18:00:00 (UTC+08:00, Asia/Kuala_Lumpur)"
    assert f"Masa: {when}" in body and f"Time: {when}" in body


def test_a_token_mac_is_bound_to_purpose_and_subject() -> None:
    key = SoftwareMacKey(bytes(range(32)))
    token = generate_token()
    assert len(token) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    mac = token_mac(key, "pin_reset", ID, token)
    assert len(mac) == 32 and token.encode() not in mac
    assert mac == token_mac(key, "pin_reset", ID, token)
    assert mac != token_mac(key, "pin_setup", ID, token)
    assert mac != token_mac(key, "pin_reset", ID[:-1] + "1", token)
    assert mac != token_mac(SoftwareMacKey(bytes(32)), "pin_reset", ID, token)
    # Length prefixes: moving a character from one field to the next changes the MAC.
    assert token_mac(key, "ab", "c", token) != token_mac(key, "a", "bc", token)
    assert generate_token() != generate_token()


def test_times_are_the_person_s_with_the_zone_named() -> None:
    assert (
        timestamp(WHEN, ZoneInfo("Asia/Kuala_Lumpur"))
        == "2026-11-27 18:00:00 (UTC+08:00, Asia/Kuala_Lumpur)"
    )
    assert timestamp(WHEN, ZoneInfo("UTC")) == "2026-11-27 10:00:00 (UTC+00:00, UTC)"


@pytest.mark.parametrize(
    ("notice", "path"),
    [
        (
            ApplicationVerificationNotice(TOKEN, "Nur Aisyah", WHEN, ID, BASE),
            f"verify-address/{ID}",
        ),
        (
            PinSetupNotice(TOKEN, "Nur Aisyah", "5f0c3ad4", WHEN, ID, link_base=BASE),
            f"set-pin/{ID}",
        ),
        (PinResetNotice(TOKEN, "Nur Aisyah", WHEN, ID, BASE), f"reset-pin/{ID}"),
        (EmailChangeNotice(TOKEN, "Nur Aisyah", WHEN, ID, BASE), f"confirm-email/{ID}"),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_token_also_comes_as_a_link_carrying_it_in_the_fragment(
    notice: Notice, path: str
) -> None:
    lines = notice.body(KL).splitlines()
    assert lines[0] == f"Token: {TOKEN}"
    assert lines[1] == f"Pautan / Link: https://roamsign.jdn.gov.my/me/{path}#{TOKEN}"
