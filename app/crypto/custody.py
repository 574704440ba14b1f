"""Which secrets a process uses: those of its key store's kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.crypto.keys import DerivedKeys, Secrets, software_secrets
from app.crypto.keystore import KeyStore
from app.crypto.pkcs11 import Pkcs11KeyStore
from app.crypto.pkcs11_secrets import configured_data_key_file, token_secrets

if TYPE_CHECKING:
    from app.settings import Settings


def build_secrets(settings: Settings, key_store: KeyStore) -> Secrets:
    """The token's secrets beside a pkcs11 key store (the master key is not read; the outbox's
    wrapped data key is read from the var dir), else the ones derived from the master key."""
    if isinstance(key_store, Pkcs11KeyStore):
        return token_secrets(key_store, configured_data_key_file(settings))
    return software_secrets(DerivedKeys.from_master(settings.load_master_key()))
