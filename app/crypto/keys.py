"""The secrets behind the OTP, the PIN, the e-mailed tokens, the audit chain and the outbox.

Services hold a `Secrets`: one `MacKey` per purpose and the `SealKey` of the outbox and the
device messages, never their bytes. `software_secrets` keeps them in this process, derived
from the one master key with HKDF (one label each); `app.crypto.pkcs11_secrets` keeps them in
a PKCS#11 token, where the same values can be imported so that nothing stored needs a new MAC.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.crypto.sealing import open_sealed, seal


def derive(master_key: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"roamsign/{label}/v1".encode()
    ).derive(master_key)


@dataclass(frozen=True, repr=False)
class DerivedKeys:
    """The purpose-bound keys; none of them is ever stored."""

    otp_mac: bytes
    pin_pepper: bytes
    outbox_seal: bytes
    key_store: bytes
    audit_mac: bytes
    subject_ref: bytes
    token_mac: bytes
    sad_mac: bytes
    activation_code_mac: bytes

    @classmethod
    def from_master(cls, master_key: bytes) -> DerivedKeys:
        return cls(
            otp_mac=derive(master_key, "otp-mac"),
            pin_pepper=derive(master_key, "pin-pepper"),
            outbox_seal=derive(master_key, "outbox-seal"),
            key_store=derive(master_key, "key-store"),
            audit_mac=derive(master_key, "audit-mac"),
            subject_ref=derive(master_key, "subject-ref"),
            token_mac=derive(master_key, "token-mac"),
            sad_mac=derive(master_key, "sad-mac"),
            activation_code_mac=derive(master_key, "activation-code-mac"),
        )

    def __repr__(self) -> str:
        return "DerivedKeys(<redacted>)"


class MacKey(Protocol):
    """An HMAC-SHA256 key used for one purpose only; its bytes stay where it lives."""

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` (never empty: a token refuses to MAC nothing)."""
        ...


class SealKey(Protocol):
    """AES-256-GCM with associated data: what is sealed for one id opens only for it.

    A blob is nonce (12 bytes) || ciphertext || tag (16 bytes), whoever made it.
    """

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        """The plaintext, or `app.crypto.sealing.SealBroken`."""
        ...


# The MAC purposes, as `Secrets` names them and as HKDF labels them (`DerivedKeys` names them
# alike); the token labels are these, prefixed.
MAC_PURPOSES: dict[str, str] = {
    "otp_mac": "otp-mac",
    "pin_pepper": "pin-pepper",
    "token_mac": "token-mac",
    "sad_mac": "sad-mac",
    "activation_code_mac": "activation-code-mac",
    "audit_mac": "audit-mac",
    "subject_ref": "subject-ref",
}
SEAL_PURPOSE = ("outbox_seal", "outbox-seal")


@dataclass(frozen=True)
class Secrets:
    """The keys of every purpose but the key store's: what the services are given."""

    otp_mac: MacKey
    pin_pepper: MacKey
    token_mac: MacKey
    sad_mac: MacKey
    activation_code_mac: MacKey
    audit_mac: MacKey
    subject_ref: MacKey
    outbox_seal: SealKey


class SoftwareMacKey:
    """HMAC-SHA256 in this process, under a key held in its memory."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "SoftwareMacKey(<redacted>)"

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()


class SoftwareSealKey:
    """AES-256-GCM in this process (`app.crypto.sealing`), under a key held in its memory."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "SoftwareSealKey(<redacted>)"

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        return seal(self._key, plaintext, associated_data)

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        return open_sealed(self._key, blob, associated_data)


class CachedMacKey:
    """A `MacKey` that remembers its last `size` answers, least recently used out first.

    For a key far slower than a lookup (one in a token: bench/hsm.py) whose inputs come back:
    the subject refs and rate-limit keys of the people who sign often. HMAC is deterministic,
    so a remembered MAC is the MAC. It keeps the inputs (MyKad digits among them) and their
    MACs in this process's memory, which has seen both anyway; nothing is written anywhere.
    """

    def __init__(self, key: MacKey, size: int = 10_000) -> None:
        self.key = key
        self._mac = functools.lru_cache(maxsize=size)(key.mac)

    def __repr__(self) -> str:
        return f"CachedMacKey({self.key!r})"

    def mac(self, data: bytes) -> bytes:
        return self._mac(data)

    @property
    def remembered(self) -> int:
        return self._mac.cache_info().currsize


def software_secrets(keys: DerivedKeys) -> Secrets:
    """Today's secrets, byte for byte: every stored MAC and sealed message stays valid."""
    macs = {name: SoftwareMacKey(getattr(keys, name)) for name in MAC_PURPOSES}
    return Secrets(**macs, outbox_seal=SoftwareSealKey(keys.outbox_seal))
