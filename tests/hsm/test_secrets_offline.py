"""A copy of the database and of the whole file system lets nobody test a PIN offline or
forge an audit event, once the secrets live in the token. This test tries exactly that.

A deployment issues a credential with a PIN (its PIN MAC, subject ref and audit events are
made with the deployment's secrets). The thief copies every database row and every file of the
deployment: its var/ directory and the SoftHSM2 token directory, all but the token PIN file.
From the copy the thief derives every key they can think of: each file and each stored value,
whole or base64/hex-decoded, taken as a master key through roamsign's HKDF (what a copy of
today's master key file gives), and every 32-byte window of every file and every stored
value taken as a raw HMAC key (a key stored in clear anywhere, token files included). Then:
(a) no candidate reproduces the PIN MAC, the subject ref or an audit MAC held in the copy;
(b) the 6-digit PIN is searched with each key that does; (c) an audit event is altered and
re-MACed with the thief's best key, and `verify_audit_trail` judges it; (d) a queued e-mail,
sealed under the outbox's data key, is opened with every candidate, and the data key file
(the key wrapped under the token's KEK, in var/) is unwrapped (RFC 5649) with every candidate
and, where that worked, the result tried on the e-mail.

Controls, so that a pass is not a test that cannot fail: on a software deployment (the master
key file is in var/) and on a token whose secrets were imported from a master key that was
left behind, the same attack finds the PIN, forges an event that verifies and opens the e-mail.

What it proves, and what it does not:
- (a) and (c) are checked for every candidate; (b) is searched in full only with a candidate
  that reproduces the stored MAC for the true PIN, because a wrong key matches one of the
  10^6 PINs with probability 10^6 / 2^256: the search with it would fail.
- It shows that the keys are in the copy in no form it knows to try. It cannot prove that no
  cleverer derivation exists; that rests on SoftHSM2 encrypting every private object's
  attributes (CKA_VALUE included) under a key derived from the token PIN, which the copy
  lacks, and on the keys having been made in the token or imported from a master key that no
  longer exists anywhere (the left-behind control shows what a surviving master key, or a
  backup of it, gives back: `keys migrate` must wipe it).
- SoftHSM2 stands in for an HSM: its objects are files on this host, so a copy that includes
  the token PIN file opens them, offline. A hardware HSM keeps its keys inside its boundary:
  its PIN lets one use them only through it, while it is reachable, logged and revocable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keys import DerivedKeys, Secrets, derive, software_secrets
from app.crypto.keystore import KeyStore, PublicKey, SoftwareKeyStore
from app.crypto.pkcs11 import Pkcs11KeyStore, _parse_data_key
from app.crypto.pkcs11_secrets import data_key_file, provision_token_secrets, token_secrets
from app.crypto.secrets import pin_mac
from app.db import Base, unit_of_work
from app.models import AuditChainHead, AuditEvent, Credential, OutboxMessage
from app.services.audit.event import event_mac, subject_ref
from app.services.audit.log import AuditLog
from app.services.audit.verification import verify_audit_trail
from app.services.lifecycle.credentials import CredentialService
from app.services.lifecycle.people import PeopleService
from app.services.mail.outbox import Outbox, associated_data
from app.settings import write_master_key
from tests.hsm.conftest import SoftHsmToken

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PIN = "271828"
MYKAD = "850101145555"
SEALED_OTP = "424242"
MASTER_KEY = bytes.fromhex("5be0c1a7d1b41f2e9c0f6a33e8d27c55a1904e6b2f7d3c8e0a9b1c2d3e4f5061")


class ThrowawayCa:
    """Certifies the credential's key with a CA key that lives in memory only: the CA's custody
    is not what this test is about, and a CA key in a file would only add to the candidates."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def issue(
        self, public_key: PublicKey, name: str, user_id: str, now: datetime, validity_days: int
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throwaway CA")]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=validity_days))
            .sign(self._key, hashes.SHA256())
        )


@dataclass(frozen=True)
class Stolen:
    """What the thief walks away with."""

    files: dict[str, bytes]
    values: list[bytes]  # every non-empty value of every database row
    credential_id: str
    stored_pin_mac: bytes
    stored_subject_ref: str
    event: dict[str, Any]  # the last audit event of one chain, as stored
    sealed: bytes  # a queued e-mail, sealed, and what it is bound to
    sealed_for: bytes


def deploy(
    sessions: sessionmaker[Session], key_store: KeyStore, secrets: Secrets
) -> tuple[str, str]:
    with unit_of_work(sessions) as session:
        audit = AuditLog(session, secrets.audit_mac, secrets.subject_ref)
        PeopleService(session, audit).create(
            mykad=MYKAD,
            name="Nur Aisyah binti Ahmad",
            agency="JDN",
            email="aisyah@jdn.gov.my",
            phone="+60123456789",
            now=NOW,
            actor="test",
        )
        credential = CredentialService(
            session,
            key_store,
            ThrowawayCa(),  # type: ignore[arg-type]
            audit,
            secrets.pin_pepper,
        ).issue_roaming(MYKAD, PIN, "ecdsa-p256", NOW, 365, "test")
        Outbox(session, secrets.outbox_seal).enqueue(
            purpose="otp",
            recipient="aisyah@jdn.gov.my",
            subject="Kod OTP",
            body=f"Kod OTP anda: {SEALED_OTP}",
            now=NOW,
        )
        return credential.id, credential.user_id


def steal(root: Path, sessions: sessionmaker[Session], credential_id: str) -> Stolen:
    files = {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".pin"  # the token PIN is what the thief lacks
    }
    values: list[bytes] = []
    with sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                values += [_as_bytes(value) for value in row if value not in (None, "", b"")]
        credential = session.get(Credential, credential_id)
        assert credential is not None and credential.pin_mac is not None
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "credential.issued")
        ).one()
        columns = [column.name for column in AuditEvent.__table__.columns]
        stored_event = {name: getattr(event, name) for name in columns}
        message = session.scalars(select(OutboxMessage)).one()
        assert message.sealed_message is not None
        sealed = message.sealed_message
        sealed_for = associated_data(message.id, message.request_id, message.recipient)
    assert stored_event["subject_ref"] is not None
    return Stolen(
        files,
        values,
        credential_id,
        credential.pin_mac,
        stored_event["subject_ref"],
        stored_event,
        sealed,
        sealed_for,
    )


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _decodings(blob: bytes) -> Iterator[bytes]:
    yield blob
    yield blob.strip()
    for decode in (base64.b64decode, base64.urlsafe_b64decode, binascii.unhexlify):
        with contextlib.suppress(ValueError, binascii.Error):
            yield decode(blob.strip())


def candidate_keys(stolen: Stolen) -> Iterator[tuple[str, bytes]]:
    """Every key the thief derives from the copy, with where it came from."""
    blobs = [*stolen.files.items(), *((f"row value {n}", v) for n, v in enumerate(stolen.values))]
    for origin, blob in blobs:
        for decoded in {d for d in _decodings(blob) if len(d) == 32}:
            for label in ("pin-pepper", "audit-mac", "subject-ref", "outbox-seal"):
                yield f"HKDF {label} of {origin}", derive(decoded, label)
    for origin, blob in blobs:
        for offset in range(len(blob) - 31):
            yield f"{origin} at {offset}", blob[offset : offset + 32]


def brute_force_pin(key: bytes, credential_id: str, stored: bytes) -> str | None:
    """Every 6-digit PIN against the stored MAC, as `pin_mac` computes it (RFC 2104 HMAC, its
    key schedule done once, as a thief's loop would)."""
    prefix = len(credential_id).to_bytes(4, "big") + credential_id.encode() + (6).to_bytes(4, "big")
    block = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + prefix)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    for n in range(10**6):
        guess = f"{n:06d}"
        digest = inner.copy()
        digest.update(guess.encode())
        mac = outer.copy()
        mac.update(digest.digest())
        if hmac.compare_digest(mac.digest(), stored):
            return guess
    return None


class _Recorder:
    """A MacKey that keeps what it is asked to MAC: the exact bytes roamsign MACs."""

    data = b""

    def mac(self, data: bytes) -> bytes:
        self.data = data
        return b""


def _message(compute: Any) -> bytes:
    recorder = _Recorder()
    compute(recorder)
    return recorder.data


def _event_message(event: dict[str, Any], previous_mac: str, **changes: Any) -> bytes:
    fields = {**event, **changes}
    return _message(
        lambda key: event_mac(
            key,
            chain=fields["chain"],
            seq=fields["seq"],
            previous_mac=previous_mac,
            occurred_at=fields["occurred_at"],
            action=fields["action"],
            actor=fields["actor"],
            subject_ref=fields["subject_ref"],
            mykad_masked=fields["mykad_masked"],
            target_id=fields["target_id"],
            outcome=fields["outcome"],
            details=fields["details"],
        )
    )


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def previous_mac(sessions: sessionmaker[Session], event: dict[str, Any]) -> str:
    with sessions() as session:
        before = session.scalar(
            select(AuditEvent.mac).where(
                AuditEvent.chain == event["chain"], AuditEvent.seq == event["seq"] - 1
            )
        )
    return before or "0" * 64


@dataclass(frozen=True)
class Attack:
    pin_key: str | None  # where the key that reproduces the PIN MAC came from
    audit_key: bytes | None
    subject_key: str | None
    pin: str | None
    forged_event_verifies: bool
    candidates: int
    message_key: str | None  # where the key that opens the sealed e-mail came from
    data_key_unwrapped_by: str | None  # where the key that unwraps the wrapped data key came from


def attack(stolen: Stolen, sessions: sessionmaker[Session], secrets: Secrets) -> Attack:
    previous = previous_mac(sessions, stolen.event)
    pin_message = _message(lambda key: pin_mac(key, stolen.credential_id, PIN))
    subject_message = _message(lambda key: subject_ref(key, MYKAD))
    event_message = _event_message(stolen.event, previous)
    pin_origin = subject_origin = message_origin = unwrap_origin = None
    pin_key = audit_key = best_guess = None
    # The wrapped data key, as the thief reads its (published) format: the 40 bytes of AES key
    # wrap before the 32-byte tag.
    wrapped = [
        blob[-72:-32] for name, blob in stolen.files.items() if name.endswith(".wrapped-key")
    ]
    count = 0
    for origin, key in candidate_keys(stolen):
        count += 1
        if message_origin is None and _opens(key, stolen.sealed, stolen.sealed_for):
            message_origin = origin
        for blob in wrapped:
            with contextlib.suppress(InvalidUnwrap):
                unwrapped = aes_key_unwrap_with_padding(key, blob)
                unwrap_origin = unwrap_origin or origin
                if message_origin is None and _opens(unwrapped, stolen.sealed, stolen.sealed_for):
                    message_origin = f"data key unwrapped with {origin}"
        best_guess = best_guess or key
        if pin_key is None and hmac.compare_digest(_hmac(key, pin_message), stolen.stored_pin_mac):
            pin_key, pin_origin = key, origin
        if subject_origin is None and hmac.compare_digest(
            _hmac(key, subject_message).hex(), stolen.stored_subject_ref
        ):
            subject_origin = origin
        if audit_key is None and hmac.compare_digest(
            _hmac(key, event_message).hex(), stolen.event["mac"]
        ):
            audit_key = key
    found_pin = (
        brute_force_pin(pin_key, stolen.credential_id, stolen.stored_pin_mac)
        if pin_key is not None
        else None
    )
    # The forgery: the credential's issuance recorded as a revocation, re-MACed, head moved.
    forging_key = audit_key or best_guess
    assert forging_key is not None
    forged = _hmac(forging_key, _event_message(stolen.event, previous, outcome="revoked")).hex()
    with unit_of_work(sessions) as session:
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == stolen.event["id"])
            .values(outcome="revoked", mac=forged)
        )
        session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain == stolen.event["chain"])
            .where(AuditChainHead.seq == stolen.event["seq"])
            .values(mac=forged)
        )
    with sessions() as session:
        verifies = verify_audit_trail(session, secrets.audit_mac).ok
    return Attack(
        pin_origin,
        audit_key,
        subject_origin,
        found_pin,
        verifies,
        count,
        message_origin,
        unwrap_origin,
    )


def _opens(key: bytes, sealed: bytes, sealed_for: bytes) -> bool:
    try:
        opened = AESGCM(key).decrypt(sealed[:12], sealed[12:], sealed_for)
    except InvalidTag:
        return False
    return SEALED_OTP.encode() in opened


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    var = tmp_path / "var"
    var.mkdir()
    return var


def _write_master_key(var_dir: Path) -> None:
    write_master_key(var_dir / "master.key", MASTER_KEY)


def test_a_copy_of_a_token_deployment_gives_no_pin_and_no_audit_key(
    softhsm_token: SoftHsmToken,
    key_store: Pkcs11KeyStore,
    sessions: sessionmaker[Session],
    var_dir: Path,
) -> None:
    provision_token_secrets(key_store, None, data_key_file(var_dir))  # a new deployment
    secrets = token_secrets(key_store, data_key_file(var_dir))
    credential_id, _ = deploy(sessions, key_store, secrets)
    stolen = steal(softhsm_token.directory.parent, sessions, credential_id)
    assert not any(name.endswith("master.key") for name in stolen.files)
    assert any("tokens/" in name and name.endswith(".object") for name in stolen.files)
    [wrapped_file] = [blob for name, blob in stolen.files.items() if name.endswith(".wrapped-key")]
    # The thief's reading of the file is the store's own (so (d) tries the real wrapped key).
    assert _parse_data_key("outbox-seal", wrapped_file)[1] == wrapped_file[-72:-32]

    result = attack(stolen, sessions, secrets)

    assert result.candidates > 5_000
    assert result.pin_key is None and result.pin is None
    assert result.subject_key is None
    assert result.audit_key is None and not result.forged_event_verifies
    assert result.message_key is None and result.data_key_unwrapped_by is None


def test_a_copy_after_an_import_whose_master_key_was_wiped_gives_nothing_either(
    softhsm_token: SoftHsmToken,
    key_store: Pkcs11KeyStore,
    sessions: sessionmaker[Session],
    var_dir: Path,
) -> None:
    # keys migrate
    provision_token_secrets(key_store, DerivedKeys.from_master(MASTER_KEY), data_key_file(var_dir))
    secrets = token_secrets(key_store, data_key_file(var_dir))
    credential_id, _ = deploy(sessions, key_store, secrets)
    stolen = steal(softhsm_token.directory.parent, sessions, credential_id)
    # The imported values are nowhere in the copy, in clear, hex or base64.
    derived = DerivedKeys.from_master(MASTER_KEY)
    everything = b"".join([*stolen.files.values(), *stolen.values])
    assert any(name.endswith(".wrapped-key") for name in stolen.files)
    for value in (
        derived.pin_pepper,
        derived.audit_mac,
        derived.subject_ref,
        derived.outbox_seal,
        MASTER_KEY,
    ):
        for form in (value, value.hex().encode(), base64.b64encode(value)):
            assert form not in everything

    result = attack(stolen, sessions, secrets)

    assert result.pin_key is None and result.pin is None and result.subject_key is None
    assert result.audit_key is None and not result.forged_event_verifies
    assert result.message_key is None and result.data_key_unwrapped_by is None


@pytest.mark.parametrize("deployment", ["software", "token, master key left behind"])
def test_control_the_same_attack_wins_when_the_key_can_be_derived(
    softhsm_token: SoftHsmToken,
    key_store: Pkcs11KeyStore,
    sessions: sessionmaker[Session],
    var_dir: Path,
    deployment: str,
) -> None:
    derived = DerivedKeys.from_master(MASTER_KEY)
    _write_master_key(var_dir)
    if deployment == "software":
        store: KeyStore = SoftwareKeyStore(derived.key_store)
        secrets = software_secrets(derived)
    else:
        provision_token_secrets(key_store, derived, data_key_file(var_dir))
        store, secrets = key_store, token_secrets(key_store, data_key_file(var_dir))
    credential_id, _ = deploy(sessions, store, secrets)
    stolen = steal(softhsm_token.directory.parent, sessions, credential_id)

    result = attack(stolen, sessions, secrets)

    assert result.pin_key == "HKDF pin-pepper of var/master.key"
    assert result.pin == PIN
    assert result.subject_key == "HKDF subject-ref of var/master.key"
    assert result.audit_key == derived.audit_mac and result.forged_event_verifies
    assert result.message_key == "HKDF outbox-seal of var/master.key"
