"""SoftHSM2 tokens for the pkcs11 key store: one fresh token per test, under tmp_path.

`softhsm_token` creates the token (scripts/softhsm-token.sh) and points SOFTHSM2_CONF at it;
`key_store` opens a `Pkcs11KeyStore` on it. Each token gets its own label: SoftHSM2 reads its
token directory when the module is initialised, and the store initialises it again when a
label is not found, so a later test never lands on an earlier test's token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.crypto.pkcs11 import Pkcs11KeyStore
from tests.softhsm import USER_PIN, SoftHsmToken, create_token, ensure_softhsm

__all__ = ["USER_PIN", "SoftHsmToken", "create_token"]


@pytest.fixture(scope="session")
def softhsm_module() -> str:
    return ensure_softhsm()


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
