"""SoftHSM2 tokens for tests: one made under a directory of its own (scripts/softhsm-token.sh).

tests/hsm makes one per test; `ROAMSIGN_TEST_KEY_STORE=pkcs11` makes one for the whole run
(tests/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Profile, Settings

REPO = Path(__file__).resolve().parents[1]
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

    def environment(self) -> dict[str, str]:
        """The variables that make a roamsign process keep its keys in this token."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "ROAMSIGN_KEY_STORE": "pkcs11",
            "ROAMSIGN_PKCS11_MODULE": self.module,
            "ROAMSIGN_PKCS11_TOKEN_LABEL": self.label,
            "ROAMSIGN_PKCS11_PIN_FILE": str(self.pin_file),
        }

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


def ensure_softhsm() -> str:
    """Install SoftHSM2 unless present (scripts/ensure-softhsm.sh); the module's path."""
    subprocess.run(["bash", str(REPO / "scripts/ensure-softhsm.sh")], check=True)
    return Settings(profile=Profile.DEMO).pkcs11_module
