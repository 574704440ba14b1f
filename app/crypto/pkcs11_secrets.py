"""The secrets in a PKCS#11 token: HMAC keys (CKM_SHA256_HMAC) and an AES-256 key for
AES-GCM, each a non-extractable token object used by label.

Sealing runs inside the token (CKM_AES_GCM) rather than under a data key unwrapped into this
process: the key is never in our memory, and the blob is the software seal's format byte for
byte (so the imported software key opens every message sealed before the move). Its price
(bench/hsm.py): a seal or open of a 600-byte e-mail costs about 1 ms on SoftHSM2 against 10 us
here, most of it PyKCS11 turning its result into bytes (about 1 us a byte); a flow does four.

`provision_token_secrets` puts them in the token once (`keys migrate`, a new deployment's first
start); `token_secrets` refuses to start without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from app.crypto.keys import MAC_PURPOSES, SEAL_PURPOSE, DerivedKeys, Secrets
from app.crypto.pkcs11 import GCM_NONCE_BYTES, Pkcs11KeyStore
from app.crypto.pkcs11_token import Pkcs11ConfigurationError
from app.crypto.sealing import SealBroken

Provisioned = Literal["generated", "imported", "present"]


class TokenSecretsMissing(Pkcs11ConfigurationError):
    """The token lacks some of roamsign's secret keys: provision them before serving."""


def token_label(purpose_label: str) -> str:
    return f"roamsign-{purpose_label}"


MAC_LABELS: dict[str, str] = {name: token_label(label) for name, label in MAC_PURPOSES.items()}
SEAL_LABEL = token_label(SEAL_PURPOSE[1])


class TokenMacKey:
    """HMAC-SHA256 inside the token, under its secret key `label`."""

    def __init__(self, store: Pkcs11KeyStore, label: str) -> None:
        self._store = store
        self.label = label

    def __repr__(self) -> str:
        return f"TokenMacKey({self.label!r})"

    def mac(self, data: bytes) -> bytes:
        return self._store.mac(self.label, data)


class TokenSealKey:
    """AES-256-GCM inside the token, under its AES key `label`; the nonce is drawn here."""

    def __init__(self, store: Pkcs11KeyStore, label: str) -> None:
        self._store = store
        self.label = label

    def __repr__(self) -> str:
        return f"TokenSealKey({self.label!r})"

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(GCM_NONCE_BYTES)
        return nonce + self._store.encrypt_gcm(self.label, nonce, plaintext, associated_data)

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        if len(blob) <= GCM_NONCE_BYTES:
            raise SealBroken("sealed blob too short")
        nonce, ciphertext = blob[:GCM_NONCE_BYTES], blob[GCM_NONCE_BYTES:]
        return self._store.decrypt_gcm(self.label, nonce, ciphertext, associated_data)


def token_secrets(store: Pkcs11KeyStore) -> Secrets:
    """The `Secrets` of a provisioned token; refuses (one line) when a key is missing."""
    missing = [
        label for label in (*MAC_LABELS.values(), SEAL_LABEL) if not store.has_secret_key(label)
    ]
    if missing:
        raise TokenSecretsMissing(
            f"the token holds no secret key labelled {', '.join(missing)}: provision them "
            "first (python -m app keys migrate --to pkcs11)"
        )
    macs = {name: TokenMacKey(store, label) for name, label in MAC_LABELS.items()}
    return Secrets(**macs, outbox_seal=TokenSealKey(store, SEAL_LABEL))


@dataclass(frozen=True)
class ProvisionedSecret:
    label: str
    outcome: Provisioned


def provision_token_secrets(
    store: Pkcs11KeyStore, software: DerivedKeys | None
) -> list[ProvisionedSecret]:
    """Put every secret key into the token; idempotent and resumable.

    With `software` (the master key's keys: a migration), each key is imported with today's
    value, non-extractable from then on, so that every stored PIN MAC, OTP MAC, token MAC,
    subject ref and audit chain keeps verifying and every sealed message still opens: nothing
    is re-MACed. A label already in the token is left alone, but only if it holds that same
    value (another value raises `TokenKeyExists`: its MACs would no longer verify).
    Without `software` (a new deployment), each missing key is generated in the token.
    Call it from one process: two creating the same label at once would make two keys.
    """
    done: list[ProvisionedSecret] = []
    for name, label in MAC_LABELS.items():
        present = store.has_secret_key(label)
        if software is not None:
            store.import_secret_key(label, getattr(software, name))
            done.append(ProvisionedSecret(label, "present" if present else "imported"))
        elif not present:
            store.secret_key(label)
            done.append(ProvisionedSecret(label, "generated"))
        else:
            done.append(ProvisionedSecret(label, "present"))
    present = store.has_secret_key(SEAL_LABEL)
    if software is not None:
        store.import_aes_key(SEAL_LABEL, software.outbox_seal)
        done.append(ProvisionedSecret(SEAL_LABEL, "present" if present else "imported"))
    elif not present:
        store.aes_key(SEAL_LABEL)
        done.append(ProvisionedSecret(SEAL_LABEL, "generated"))
    else:
        done.append(ProvisionedSecret(SEAL_LABEL, "present"))
    return done
