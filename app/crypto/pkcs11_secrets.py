"""The secrets of a pkcs11 deployment: HMAC keys in the token, and the outbox's data key.

The HMAC keys (OTP, PIN, e-mailed tokens, SAD, activation codes, audit chain, subject refs)
are non-extractable token objects used by label (CKM_SHA256_HMAC): a copy of the database
and of every file cannot test a PIN or forge an audit event (tests/hsm/test_secrets_offline).
The subject refs, deterministic MACs of a MyKad or a rate-limit subject, are remembered per
process (`CachedMacKey`): a person who signs often costs the token nothing more.

The outbox and the device messages are sealed with a data key: an AES-256 key stored only
wrapped under the token's key-encryption key (C_WrapKey, CKM_AES_KEY_WRAP_PAD), in the file
`data_key_file(var_dir)`, unwrapped once per process, then used by `app.crypto.sealing` here.
Said plainly: that key is in clear in this process's memory while it runs, as are the
plaintext messages it seals and opens (this process writes and reads them). What it buys: a
seal or open of a 600-byte e-mail costs ~10 us instead of ~1.3 ms with AES-GCM inside the
token (mostly PyKCS11 turning the result into bytes), and the blob format is unchanged
(nonce || ciphertext || tag), so messages sealed by software or by the token's AES-GCM open.
What it keeps: without the token, the file is 40 bytes of AES key wrap that nothing opens; a
copy of the database and every file (the token PIN aside) opens no message. What it gives up
against GCM in the token: someone who can read this process's memory reads the key (they
read the messages anyway) and can open messages sealed before or after, until it is changed.

Why a file and not a database row: the key must be there before the database is reached
(start-up refuses without it, in one line), it needs no schema change, and it is not secret
(useless without the token's KEK), so it may be copied to every host with the rest of the
configuration and backed up anywhere. Back it up with the database: without it, pending
outbox and device messages no longer open (the token can make a new one, not the old one).

`provision_token_secrets` puts everything in place once (`keys migrate`, a new deployment's
first start); `token_secrets` refuses to start without it.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.crypto.keys import (
    MAC_PURPOSES,
    SEAL_PURPOSE,
    CachedMacKey,
    DerivedKeys,
    MacKey,
    SealKey,
    Secrets,
)
from app.crypto.pkcs11 import GCM_NONCE_BYTES, KeyBlobRejected, Pkcs11KeyStore, TokenKeyExists
from app.crypto.pkcs11_token import Pkcs11ConfigurationError
from app.crypto.sealing import SealBroken, open_sealed, seal

if TYPE_CHECKING:
    from app.settings import Settings

Provisioned = Literal["generated", "imported", "present"]


class TokenSecretsMissing(Pkcs11ConfigurationError):
    """The token lacks some of roamsign's secret keys: provision them before serving."""


def token_label(purpose_label: str) -> str:
    return f"roamsign-{purpose_label}"


MAC_LABELS: dict[str, str] = {name: token_label(label) for name, label in MAC_PURPOSES.items()}
SEAL_LABEL = token_label(SEAL_PURPOSE[1])
DATA_KEY_PURPOSE = SEAL_PURPOSE[1]


def data_key_file(var_dir: Path) -> Path:
    """Where the outbox's wrapped data key is kept, unless a setting says otherwise."""
    return var_dir / f"{SEAL_LABEL}.wrapped-key"


def configured_data_key_file(settings: Settings) -> Path:
    """`ROAMSIGN_PKCS11_DATA_KEY_FILE`, or the file in the var dir."""
    return settings.pkcs11_data_key_file or data_key_file(settings.var_dir)


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
    """AES-256-GCM inside the token, under its AES key `label` (stage 2a's outbox key: what
    it sealed opens still); the nonce is drawn here."""

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


class DataSealKey:
    """AES-256-GCM in this process under the unwrapped data key (see the module docstring).

    `legacy`, if any, opens what stage 2a sealed inside the token under a key made there
    (a key whose value nobody knows, so it could not become the data key).
    """

    def __init__(self, key: bytes, legacy: SealKey | None = None) -> None:
        self._key = key
        self.legacy = legacy

    def __repr__(self) -> str:
        return f"DataSealKey(<redacted>, legacy={self.legacy!r})"

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        return seal(self._key, plaintext, associated_data)

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        try:
            return open_sealed(self._key, blob, associated_data)
        except SealBroken:
            if self.legacy is None:
                raise
            return self.legacy.open(blob, associated_data)


def token_secrets(store: Pkcs11KeyStore, data_key_file: Path) -> Secrets:
    """The `Secrets` of a provisioned deployment; refuses (one line) when a key is missing."""
    missing = [label for label in MAC_LABELS.values() if not store.has_secret_key(label)]
    if not data_key_file.is_file():
        missing.append(f"{SEAL_LABEL} (its wrapped data key file {data_key_file} is missing)")
    if missing:
        raise TokenSecretsMissing(
            f"the token holds no secret key labelled {', '.join(missing)}: provision them "
            "first (python -m app keys migrate --to pkcs11)"
        )
    try:
        data_key = store.unwrap_data_key(DATA_KEY_PURPOSE, data_key_file.read_bytes())
    except KeyBlobRejected as error:
        raise TokenSecretsMissing(
            f"{data_key_file} is not a data key this token can unwrap: {error}"
        ) from None
    macs: dict[str, MacKey] = {
        name: TokenMacKey(store, label) for name, label in MAC_LABELS.items()
    }
    macs["subject_ref"] = CachedMacKey(macs["subject_ref"])
    return Secrets(**macs, outbox_seal=DataSealKey(data_key, _legacy_seal_key(store, data_key)))


def _legacy_seal_key(store: Pkcs11KeyStore, data_key: bytes) -> TokenSealKey | None:
    """Stage 2a's token AES key, if there is one and it is not the data key itself (an
    imported one is: then the data key opens all it sealed)."""
    if not store.has_secret_key(SEAL_LABEL):
        return None
    nonce, probe = os.urandom(GCM_NONCE_BYTES), b"roamsign legacy seal probe"
    ours = AESGCM(data_key).encrypt(nonce, probe, probe)
    if hmac.compare_digest(store.encrypt_gcm(SEAL_LABEL, nonce, probe, probe), ours):
        return None
    return TokenSealKey(store, SEAL_LABEL)


@dataclass(frozen=True)
class ProvisionedSecret:
    label: str
    outcome: Provisioned


def provision_token_secrets(
    store: Pkcs11KeyStore, software: DerivedKeys | None, data_key_file: Path | None = None
) -> list[ProvisionedSecret]:
    """Put every secret key into the token, and the wrapped data key into `data_key_file`;
    idempotent and resumable.

    With `software` (the master key's keys: a migration), each HMAC key is imported with
    today's value, non-extractable from then on, and the outbox key becomes the data key, so
    that every stored PIN MAC, OTP MAC, token MAC, subject ref and audit chain keeps verifying
    and every sealed message still opens: nothing is re-MACed. A key already in place is left
    alone, but only if it holds that same value (another value raises `TokenKeyExists`: its
    MACs would no longer verify, its messages no longer open).
    Without `software` (a new deployment), each missing key is generated in the token.
    `data_key_file` defaults to the one in the configured var dir (`keys migrate`'s).
    Call it from one process: two creating the same label at once would make two keys (the
    data key file, written once and atomically, cannot be made twice).
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
    path = data_key_file if data_key_file is not None else _configured_data_key_file()
    known = software.outbox_seal if software is not None else None
    outcome: Provisioned = "present"
    if not path.exists():
        made = _write_once(path, store.wrap_data_key(DATA_KEY_PURPOSE, known))
        if made:
            outcome = "imported" if known is not None else "generated"
    if outcome == "present" and known is not None:
        value = store.unwrap_data_key(DATA_KEY_PURPOSE, path.read_bytes())
        if not hmac.compare_digest(value, known):
            raise TokenKeyExists(f"{path} holds another outbox data key")
    done.append(ProvisionedSecret(SEAL_LABEL, outcome))
    return done


def _configured_data_key_file() -> Path:
    # The two-argument call (`keys migrate`, `keys init`) runs with these settings.
    from app.settings import get_settings

    return configured_data_key_file(get_settings())


def _write_once(path: Path, blob: bytes) -> bool:
    """Write `blob` to `path` unless it exists; readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        with temporary.open("xb") as file:
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        temporary.chmod(0o600)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
