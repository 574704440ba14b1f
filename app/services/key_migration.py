"""`keys migrate --to pkcs11`: every software key into the token, checked before it replaces.

Three passes. Move: each CA key is imported into the token as a non-extractable key pair
(`roamsign-ca-root`, `roamsign-ca-issuing`); the service keys kept beside them (the TSA's, the
OCSP responder's, the audit checkpoints') and each credential's key are wrapped under the
token's key-encryption key (the clear key passes through the token as a session object only).
Verify: every moved key signs a test digest in the token, checked against its certificate's
public key. Replace: only then does each row's key_blob become the token reference or the
wrapped blob, one commit per credential, and only where the row still holds the software
blob that was moved (a key revoked meanwhile stays wiped).

A run interrupted in the first two passes wrote nothing; one interrupted in the third left
some rows moved, which the next run skips. So the command is idempotent and resumable, and
nothing is lost if the token refuses a key: the software blob stays until its key verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keystore import PublicKey, SoftwareKeyStore
from app.crypto.pkcs11 import Pkcs11KeyStore
from app.crypto.pkcs11_format import BLOB_MAGIC, verify_digest
from app.db import unit_of_work
from app.models import CertificateAuthority, Credential
from app.services.audit.checkpoint import CHECKPOINT_KEY_ID
from app.services.ca import TOKEN_LABELS, ca_key_id, public_key_of, token_label, token_reference

TEST_DIGEST = hashlib.sha256(b"roamsign keys migrate: verification").digest()
# What a pass reports as it goes: (pass name, done, total).
Progress = Callable[[str, int, int], None]


@dataclass
class _Move:
    kind: str  # "ca" (a token key pair), "service" (a wrapped key in a CA row) or "credential"
    name: str  # the row's name or the credential id
    software_blob: bytes
    public_key: PublicKey
    new_blob: bytes = b""


@dataclass
class MigrationReport:
    moved_ca_keys: int = 0
    moved_service_keys: int = 0
    moved_credential_keys: int = 0
    already_moved: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class KeyMigration:
    """Moves a software deployment's keys into a PKCS#11 token (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        software: SoftwareKeyStore,
        token: Pkcs11KeyStore,
        progress: Progress | None = None,
    ) -> None:
        self.sessions = sessions
        self.software = software
        self.token = token
        self.progress = progress or (lambda _step, _done, _total: None)

    def run(self) -> MigrationReport:
        report = MigrationReport()
        moves = self._plan(report)
        self._pass("move", moves, self._move)
        self._pass("verify", moves, lambda move: self._verify(move, report))
        if report.failed:
            return report  # nothing replaced: every software copy stays
        self._pass("replace", moves, lambda move: self._replace(move, report))
        return report

    def _plan(self, report: MigrationReport) -> list[_Move]:
        moves: list[_Move] = []
        with self.sessions() as session:
            for ca in session.scalars(
                select(CertificateAuthority).order_by(CertificateAuthority.name)
            ):
                if token_label(ca.key_blob) is not None or ca.key_blob.startswith(BLOB_MAGIC):
                    report.already_moved += 1
                    continue
                kind = "ca" if ca.name in TOKEN_LABELS else "service"
                moves.append(_Move(kind, ca.name, ca.key_blob, _public_key(ca.certificate_pem)))
            rows = session.execute(
                select(Credential.id, Credential.key_blob, Credential.certificate_pem)
                .where(Credential.key_blob.is_not(None), Credential.certificate_pem.is_not(None))
                .order_by(Credential.created_at, Credential.id)
            )
            for credential_id, blob, pem in rows:
                if blob is None or pem is None:
                    continue
                if blob.startswith(BLOB_MAGIC):
                    report.already_moved += 1
                    continue
                public = public_key_of(_certificate(pem))
                moves.append(_Move("credential", credential_id, blob, public))
        return moves

    def _pass(self, step: str, moves: list[_Move], work: Callable[[_Move], None]) -> None:
        self.progress(step, 0, len(moves))
        for done, move in enumerate(moves, 1):
            work(move)
            self.progress(step, done, len(moves))

    def _move(self, move: _Move) -> None:
        if move.kind == "ca":
            key = self.software.private_key(ca_key_id(move.name), move.software_blob)
            self.token.import_token_key(TOKEN_LABELS[move.name], key)
            move.new_blob = token_reference(TOKEN_LABELS[move.name])
            return
        key_id = _key_id(move)
        key = self.software.private_key(key_id, move.software_blob)
        move.new_blob = self.token.import_private_key(key_id, key).blob

    def _verify(self, move: _Move, report: MigrationReport) -> None:
        try:
            if move.kind == "ca":
                signature = self.token.sign_with_token_key(
                    TOKEN_LABELS[move.name], TEST_DIGEST, "sha256"
                )
            else:
                signature = self.token.sign_digest(
                    _key_id(move), move.new_blob, TEST_DIGEST, "sha256"
                )
            verify_digest(move.public_key, signature, TEST_DIGEST, "sha256")
        except Exception as error:  # reported, and then nothing is replaced
            report.failed.append(f"{move.kind} {move.name}: {type(error).__name__} {error}")

    def _replace(self, move: _Move, report: MigrationReport) -> None:
        statement = (
            update(CertificateAuthority).where(
                CertificateAuthority.name == move.name,
                CertificateAuthority.key_blob == move.software_blob,
            )
            if move.kind != "credential"
            else update(Credential).where(
                Credential.id == move.name, Credential.key_blob == move.software_blob
            )
        )
        with unit_of_work(self.sessions) as session:
            replaced = session.execute(  # type: ignore[attr-defined]
                statement.values(key_blob=move.new_blob).execution_options(
                    synchronize_session=False
                )
            ).rowcount
        if replaced and move.kind == "ca":
            report.moved_ca_keys += 1
        elif replaced and move.kind == "service":
            report.moved_service_keys += 1
        elif replaced:
            report.moved_credential_keys += 1
        else:
            report.already_moved += 1  # revoked, renewed or moved by another run meanwhile


def _certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _public_key(pem: str) -> PublicKey:
    """A CA row's public key: from its certificate, or the bare key the checkpoint row keeps."""
    if "BEGIN PUBLIC KEY" in pem:
        key = serialization.load_pem_public_key(pem.encode())
        assert isinstance(key, PublicKey)
        return key
    return public_key_of(_certificate(pem))


def _key_id(move: _Move) -> str:
    """The id a key was sealed under in the software store (and is wrapped under here)."""
    if move.kind == "credential" or move.name == CHECKPOINT_KEY_ID:
        return move.name
    return ca_key_id(move.name)
