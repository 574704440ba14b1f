"""The key-custody settings: their environment names, defaults and checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Profile, Settings


def test_the_environment_names_operators_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROAMSIGN_KEY_STORE", "pkcs11")
    monkeypatch.setenv("ROAMSIGN_PKCS11_MODULE", "/opt/hsm/lib/libvendor-pkcs11.so")
    monkeypatch.setenv("ROAMSIGN_PKCS11_TOKEN_LABEL", "roamsign-prod")
    monkeypatch.setenv("ROAMSIGN_PKCS11_PIN_FILE", str(tmp_path / "pin"))
    settings = Settings()
    assert settings.key_store == "pkcs11"
    assert settings.pkcs11_module == "/opt/hsm/lib/libvendor-pkcs11.so"
    assert settings.pkcs11_token_label == "roamsign-prod"
    assert settings.pkcs11_pin_file == tmp_path / "pin"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEY_STORE", "PKCS11_MODULE", "PKCS11_TOKEN_LABEL", "PKCS11_PIN_FILE"):
        monkeypatch.delenv(f"ROAMSIGN_{name}", raising=False)
    production = Settings(profile=Profile.PRODUCTION)
    assert production.key_store == "software"
    assert production.pkcs11_token_label == "roamsign"
    assert production.pkcs11_pin_file is None
    # Production names its HSM's library; only the demo falls back to SoftHSM2.
    assert production.pkcs11_module == ""
    assert Settings(profile=Profile.DEMO).pkcs11_module.endswith("/libsofthsm2.so")


@pytest.mark.parametrize(
    "field",
    [
        {"key_store": "hsm"},
        {"pkcs11_module": "libsofthsm2.so"},
        {"pkcs11_token_label": ""},
        {"pkcs11_token_label": "x" * 33},
    ],
)
def test_refused_values(field: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**field)  # type: ignore[arg-type]
