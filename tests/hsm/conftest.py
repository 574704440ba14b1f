"""SoftHSM2 tokens for the pkcs11 key store: one fresh token per test, under tmp_path.

`softhsm_token` creates the token (scripts/softhsm-token.sh) and points SOFTHSM2_CONF at it;
`key_store` opens a `Pkcs11KeyStore` on it. Each token gets its own label: SoftHSM2 reads its
token directory when the module is initialised, and the store initialises it again when a
label is not found, so a later test never lands on an earlier test's token.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.crypto.pkcs11 import Pkcs11KeyStore
from app.settings import Profile, Settings

REPO = Path(__file__).resolve().parents[2]
USER_PIN = "user-pin-4711"
SO_PIN = "so-pin-4711"


@dataclass(frozen=True)
class SoftHsmToken:
    directory: Path
    conf: Path
    label: str
    pin_file: Path
    module: str

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "profile": Profile.DEMO,
            "var_dir": self.directory,
            "key_store": "pkcs11",
            "pkcs11_module": self.module,
            "pkcs11_token_label": self.label,
            "pkcs11_pin_file": self.pin_file,
        }
        return Settings(**(values | overrides))

    def env(self) -> dict[str, str]:
        """The environment a subprocess needs to reach this token."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


def create_token(directory: Path, module: str, label: str | None = None) -> SoftHsmToken:
    directory.mkdir(parents=True, exist_ok=True)
    pin_file, so_pin_file = directory / "user.pin", directory / "so.pin"
    pin_file.write_text(USER_PIN + "\n")
    so_pin_file.write_text(SO_PIN + "\n")
    label = label or f"test-{secrets.token_hex(6)}"
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts/softhsm-token.sh"),
            str(directory),
            label,
            str(so_pin_file),
            str(pin_file),
        ],
        check=True,
        capture_output=True,
    )
    return SoftHsmToken(directory, directory / "softhsm2.conf", label, pin_file, module)


@pytest.fixture(scope="session")
def softhsm_module() -> str:
    subprocess.run(["bash", str(REPO / "scripts/ensure-softhsm.sh")], check=True)
    return Settings(profile=Profile.DEMO).pkcs11_module


@pytest.fixture
def softhsm_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, softhsm_module: str
) -> SoftHsmToken:
    token = create_token(tmp_path / "softhsm", softhsm_module)
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    return token


@pytest.fixture
def key_store(softhsm_token: SoftHsmToken) -> Iterator[Pkcs11KeyStore]:
    store = Pkcs11KeyStore.from_settings(softhsm_token.settings())
    yield store
    store.close()
