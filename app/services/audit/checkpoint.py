"""Signed checkpoints of the audit trail, kept outside the database.

The MAC chains prove that no event was changed, inserted or reordered, but not that none was
cut off: whoever can write the database can delete a chain's last events and move its head
back, or delete a whole chain with its head, and what is left still verifies. A checkpoint
records every chain's head (seq and MAC), the number of chains and the time, signed with a
key of the key store (the HSM's, once the key store is PKCS#11), and is appended to a file
outside the database (`ROAMSIGN_AUDIT_CHECKPOINT_DIR`; a log shipper or a WORM mount takes it
from there). `verify_audit_trail(..., checkpoints=...)` then refuses a trail in which any
chain ends before, or differs at, a checkpointed head, or a checkpointed chain is missing.

The key's blob and public key are a row of `certificate_authorities` named
`audit-checkpoint`: every process and host shares it, as it shares the database, and no
schema change was needed. The row alone proves nothing (whoever can write it can replace
the public key); `CheckpointKey.verifying_key` therefore signs a fresh challenge through the
key store and accepts the public key only if it verifies that signature: a key whose private
half is in the key store. One file per UTC day, one JSON line per checkpoint (appends of one
line each, whole lines only), so a shipper can tail it and a day's file can be sealed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keystore import KeyStore, PublicKey
from app.db import insert_with_on_conflict, unit_of_work
from app.models import AuditChainHead, CertificateAuthority

CHECKPOINT_KEY_ID = "audit-checkpoint"  # the key store's id and the row's name (16 characters)
CHECKPOINT_VERSION = 1
FILE_PATTERN = "audit-checkpoints-*.jsonl"


class CheckpointKeyMissing(LookupError):
    """No checkpoint key in the database, or one the key store does not hold."""


@dataclass(frozen=True)
class Head:
    chain: int
    seq: int
    mac: str


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint; `source` says where it was read (file and line) or written."""

    created_at: datetime
    heads: tuple[Head, ...]
    key: str  # "sha256:" + the hex SHA-256 of the public key's SubjectPublicKeyInfo
    signature: bytes = b""
    source: str = ""

    @property
    def chains(self) -> int:
        return len(self.heads)

    @property
    def events(self) -> int:
        """Events in the trail when it was taken (each chain's seq counts its events)."""
        return sum(head.seq for head in self.heads)

    def payload(self) -> dict[str, object]:
        return {
            "version": CHECKPOINT_VERSION,
            "created_at": self.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "chains": self.chains,
            "events": self.events,
            "heads": [{"chain": h.chain, "seq": h.seq, "mac": h.mac} for h in self.heads],
            "key": self.key,
        }

    def digest(self) -> bytes:
        """SHA-256 of the payload's canonical JSON: what the signature covers."""
        canonical = json.dumps(self.payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()

    def line(self) -> str:
        return json.dumps(
            self.payload() | {"signature": base64.b64encode(self.signature).decode()},
            sort_keys=True,
            separators=(",", ":"),
        )


def key_fingerprint(public_key: PublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


class CheckpointKey:
    """The checkpoint signing key: created on first use, its blob and public key in a row."""

    def __init__(self, session: Session, key_store: KeyStore) -> None:
        self.session = session
        self.key_store = key_store

    def signing_row(self, now: datetime) -> CertificateAuthority:
        row = self._row()
        if row is not None:
            return row
        generated = self.key_store.generate(CHECKPOINT_KEY_ID, "ecdsa-p256")
        public_pem = generated.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        # Two first checkpoints at once: one insert wins, the other's key is dropped.
        dialect = self.session.get_bind().dialect.name
        self.session.execute(
            insert_with_on_conflict(dialect, CertificateAuthority)
            .values(
                name=CHECKPOINT_KEY_ID,
                certificate_pem=public_pem,
                key_blob=generated.blob,
                created_at=now,
            )
            .on_conflict_do_nothing()
        )
        row = self._row()
        assert row is not None
        return row

    def verifying_key(self) -> PublicKey:
        """The public key, once the key store has shown it holds the private half."""
        row = self._row()
        if row is None:
            raise CheckpointKeyMissing(
                "no audit checkpoint key in the database (row 'audit-checkpoint' of "
                "certificate_authorities): deleted, or no checkpoint was ever written"
            )
        public_key = serialization.load_pem_public_key(row.certificate_pem.encode())
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise CheckpointKeyMissing("the audit checkpoint key is not an ECDSA or RSA key")
        challenge = hashlib.sha256(secrets.token_bytes(32)).digest()
        try:
            signature = self.key_store.sign_digest(
                CHECKPOINT_KEY_ID, row.key_blob, challenge, "sha256"
            )
        except Exception as exc:
            raise CheckpointKeyMissing(
                f"the key store cannot use the audit checkpoint key ({type(exc).__name__}): "
                "its blob was replaced or the key store is another one"
            ) from exc
        if not signature_valid(public_key, signature, challenge):
            raise CheckpointKeyMissing(
                "the audit checkpoint key's public key is not the one the key store holds: "
                "the row was replaced"
            )
        return public_key

    def _row(self) -> CertificateAuthority | None:
        return self.session.scalar(
            select(CertificateAuthority)
            .where(CertificateAuthority.name == CHECKPOINT_KEY_ID)
            .execution_options(populate_existing=True)
        )


def signature_valid(public_key: PublicKey, signature: bytes, digest: bytes) -> bool:
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)
    except InvalidSignature:
        return False
    return True


def current_heads(session: Session) -> tuple[Head, ...]:
    """Every chain's committed head (a chain with no event yet has none)."""
    rows = session.execute(
        select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.mac)
        .where(AuditChainHead.seq > 0)
        .order_by(AuditChainHead.chain)
    )
    return tuple(Head(chain, seq, mac) for chain, seq, mac in rows)


class CheckpointWriter:
    """Takes and appends checkpoints; the caller's session only reads (and, once, adds the
    key's row: commit it)."""

    def __init__(self, session: Session, key_store: KeyStore, directory: Path) -> None:
        self.session = session
        self.key_store = key_store
        self.directory = directory

    def write(self, now: datetime) -> Checkpoint:
        row = CheckpointKey(self.session, self.key_store).signing_row(now)
        public_key = serialization.load_pem_public_key(row.certificate_pem.encode())
        assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        unsigned = Checkpoint(
            created_at=now.astimezone(UTC),
            heads=current_heads(self.session),
            key=key_fingerprint(public_key),
        )
        signature = self.key_store.sign_digest(
            CHECKPOINT_KEY_ID, row.key_blob, unsigned.digest(), "sha256"
        )
        path = self.directory / f"audit-checkpoints-{now.astimezone(UTC):%Y-%m-%d}.jsonl"
        checkpoint = Checkpoint(
            unsigned.created_at, unsigned.heads, unsigned.key, signature, str(path)
        )
        append_line(path, checkpoint.line())
        return checkpoint

    def due(self, now: datetime, every_events: int, every_seconds: int) -> bool:
        """A checkpoint is due when none was written yet, `every_seconds` have passed since
        the last, or the trail has grown by `every_events` since."""
        last = last_checkpoint(self.directory)
        if last is None:
            return True
        if (now - last.created_at).total_seconds() >= every_seconds:
            return True
        events = sum(head.seq for head in current_heads(self.session))
        return events - last.events >= every_events


def take_checkpoint(
    sessions: sessionmaker[Session],
    key_store: KeyStore,
    directory: Path,
    now: datetime,
    *,
    due: tuple[int, int] | None = None,
) -> Checkpoint | None:
    """Write a checkpoint now, or only if one is `due` ((every_events, every_seconds)); the
    key is created first and committed on its own, so no checkpoint is ever signed by a key
    the database does not keep."""
    with unit_of_work(sessions) as session:
        CheckpointKey(session, key_store).signing_row(now)
    with unit_of_work(sessions) as session:
        writer = CheckpointWriter(session, key_store, directory)
        if due is not None and not writer.due(now, *due):
            return None
        return writer.write(now)


def append_line(path: Path, line: str) -> None:
    """One line appended by one write(2) on an O_APPEND descriptor, then fsync'd: concurrent
    writers never interleave inside a line, and a line is on disk before we go on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(descriptor, (line + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def last_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint in the newest file (unverified: used only to decide when the next
    one is due)."""
    files = sorted(directory.glob(FILE_PATTERN))
    for path in reversed(files):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        for number in range(len(lines), 0, -1):
            try:
                return parse_checkpoint(lines[number - 1], f"{path.name}:{number}")
            except ValueError:
                continue
    return None


def parse_checkpoint(line: str, source: str) -> Checkpoint:
    try:
        data = json.loads(line)
        heads = tuple(
            Head(int(head["chain"]), int(head["seq"]), str(head["mac"])) for head in data["heads"]
        )
        checkpoint = Checkpoint(
            created_at=datetime.fromisoformat(str(data["created_at"]).replace("Z", "+00:00")),
            heads=heads,
            key=str(data["key"]),
            signature=base64.b64decode(data["signature"], validate=True),
            source=source,
        )
        if data["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"version {data['version']!r}")
        if data["chains"] != checkpoint.chains or data["events"] != checkpoint.events:
            raise ValueError("its chain or event count does not match its heads")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {source} is not readable: {exc}") from exc
    return checkpoint


@dataclass
class CheckpointReading:
    """The checkpoints of a directory, each verified, and what was wrong with the others."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_checkpoints(directory: Path, public_key: PublicKey | None) -> CheckpointReading:
    """Every checkpoint in `directory`, each signature verified with `public_key` (None: the
    key is missing, so none can be). Also refused: a chain whose seq goes down, or a chain
    that disappears, from one checkpoint to the next (by time)."""
    reading = CheckpointReading()
    fingerprint = key_fingerprint(public_key) if public_key is not None else None
    for path in sorted(directory.glob(FILE_PATTERN)):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{number}"
            try:
                checkpoint = parse_checkpoint(line, source)
            except ValueError as exc:
                reading.problems.append(str(exc))
                continue
            if public_key is None:
                continue
            if checkpoint.key != fingerprint or not signature_valid(
                public_key, checkpoint.signature, checkpoint.digest()
            ):
                reading.problems.append(
                    f"checkpoint {source}: the signature is wrong (not made by the audit "
                    "checkpoint key, or the checkpoint was changed)"
                )
                continue
            reading.checkpoints.append(checkpoint)
    reading.checkpoints.sort(key=lambda c: c.created_at)
    reading.problems.extend(_regressions(reading.checkpoints))
    return reading


def _regressions(checkpoints: Iterable[Checkpoint]) -> list[str]:
    problems = []
    seen: dict[int, tuple[int, str]] = {}
    for checkpoint in checkpoints:
        heads = {head.chain: head.seq for head in checkpoint.heads}
        for chain, (seq, source) in seen.items():
            if heads.get(chain, 0) < seq:
                problems.append(
                    f"checkpoint {checkpoint.source}: chain {chain} at seq "
                    f"{heads.get(chain, 0)}, behind seq {seq} in the earlier {source}"
                )
        for head in checkpoint.heads:
            seen[head.chain] = (head.seq, checkpoint.source)
    return problems


def expected_heads(checkpoints: Iterable[Checkpoint]) -> Mapping[int, dict[int, tuple[str, str]]]:
    """chain -> seq -> (MAC, the checkpoint that recorded it), for the trail's verification."""
    expected: dict[int, dict[int, tuple[str, str]]] = {}
    for checkpoint in checkpoints:
        for head in checkpoint.heads:
            expected.setdefault(head.chain, {})[head.seq] = (head.mac, checkpoint.source)
    return expected
