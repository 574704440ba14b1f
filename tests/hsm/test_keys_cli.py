"""`python -m app keys self-test` and `keys migrate --to pkcs11`, as an operator runs them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from app.crypto.pkcs11 import Pkcs11KeyStore
from app.crypto.pkcs11_format import BLOB_MAGIC, verify_digest
from app.models import CertificateAuthority, Credential
from app.runtime import Runtime
from app.services.ca import TOKEN_LABELS, ca_key_id, token_label
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.settings import Settings
from tests.factories import FACTORY_CALLER, Factory
from tests.softhsm import SoftHsmToken

DIGEST = hashlib.sha256(b"PV-2026-000123").digest()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"key_store": "software"})


def keys_cli(
    settings: Settings, token: SoftHsmToken, *args: str, expect: int = 0, **env: str
) -> subprocess.CompletedProcess[str]:
    assert settings.master_key_file is not None
    environment = {
        **os.environ,
        **token.environment(),
        "ROAMSIGN_PROFILE": "production",
        "ROAMSIGN_DATABASE_URL": settings.database_url,
        "ROAMSIGN_MASTER_KEY_FILE": str(settings.master_key_file),
        "ROAMSIGN_VAR_DIR": str(settings.var_dir),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "keys", *args],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    return done


def test_self_test_signs_and_verifies_on_either_store_and_fails_in_one_line(
    settings: Settings, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    software = keys_cli(settings, softhsm_token, "self-test", ROAMSIGN_KEY_STORE="software")
    assert "signed and verified" in software.stdout
    token = keys_cli(settings, softhsm_token, "self-test")
    assert f"token {softhsm_token.label!r}" in token.stdout
    wrong = keys_cli(
        settings, softhsm_token, "self-test", expect=1, ROAMSIGN_PKCS11_TOKEN_LABEL="gone"
    )
    assert wrong.stderr.count("\n") == 1
    assert wrong.stderr.startswith("error: ROAMSIGN_PKCS11_TOKEN_LABEL: ")


def test_migrate_moves_every_key_verifies_then_replaces_and_runs_again_as_a_no_op(
    settings: Settings, softhsm_token: SoftHsmToken, factory: Factory, runtime: Runtime
) -> None:
    ecdsa, rsa = factory.person(), factory.person(key_algorithm="rsa-2048")
    revoked = factory.person()
    assert revoked.credential_id is not None
    with runtime.sessions.begin() as session:
        CredentialLifecycle(factory.lifecycle(session)).revoke(
            FACTORY_CALLER, revoked.credential_id, "keyCompromise", factory.now()
        )

    moved = keys_cli(settings, softhsm_token, "migrate", "--to", "pkcs11", "--keep-master-key")
    assert (
        "moved 2 CA keys, 2 service keys and 2 credential keys into the token (0 there already)"
    ) in (moved.stdout), moved.stdout + moved.stderr
    assert moved.stderr == ""  # no terminal: no progress bar

    with runtime.sessions() as session:
        rows = list(session.scalars(select(CertificateAuthority)))
        authorities = {ca.name: ca.key_blob for ca in rows}
        pems = {ca.name: ca.certificate_pem for ca in rows}
        credentials = {
            c.id: (c.key_blob, c.certificate_pem) for c in session.scalars(select(Credential))
        }
    ca_keys = {name: blob for name, blob in authorities.items() if name in TOKEN_LABELS}
    assert {name: token_label(blob) for name, blob in ca_keys.items()} == TOKEN_LABELS
    # The TSA's and the OCSP responder's keys beside them: wrapped, and they sign in the token.
    service_keys = {name: blob for name, blob in authorities.items() if name not in TOKEN_LABELS}
    assert set(service_keys) == {"tsa", "ocsp"}
    assert credentials[revoked.credential_id][0] is None  # a wiped key stays wiped

    store = Pkcs11KeyStore.from_settings(softhsm_token.settings())
    try:
        for person in (ecdsa, rsa):
            assert person.credential_id is not None
            blob, pem = credentials[person.credential_id]
            assert blob is not None and blob.startswith(BLOB_MAGIC) and pem is not None
            certificate = x509.load_pem_x509_certificate(pem.encode())
            public_key = certificate.public_key()
            signature = store.sign_digest(person.credential_id, blob, DIGEST, "sha256")
            verify_digest(public_key, signature, DIGEST, "sha256")  # type: ignore[arg-type]
        for name, blob in service_keys.items():
            assert blob.startswith(BLOB_MAGIC)
            signature = store.sign_digest(ca_key_id(name), blob, DIGEST, "sha256")
            service_key = x509.load_pem_x509_certificate(pems[name].encode()).public_key()
            verify_digest(service_key, signature, DIGEST, "sha256")  # type: ignore[arg-type]
    finally:
        store.close()

    again = keys_cli(settings, softhsm_token, "migrate", "--to", "pkcs11")
    assert (
        "moved 0 CA keys, 0 service keys and 0 credential keys into the token (6 there already)"
    ) in (again.stdout)
    # The secrets were imported from the master key: once everything is in the token, the
    # default run wipes it, and a later run has nothing left to migrate from.
    assert settings.master_key_file is not None
    assert not settings.master_key_file.exists()
    assert f"master key file {settings.master_key_file} wiped" in again.stdout
    after = keys_cli(settings, softhsm_token, "migrate", "--to", "pkcs11")
    assert after.stdout.startswith("nothing to migrate: no master key file")
    assert not settings.master_key_file.exists()  # not made anew, even in the demo profile


def test_migrate_refuses_a_token_that_holds_another_ca_key(
    settings: Settings, softhsm_token: SoftHsmToken, factory: Factory, runtime: Runtime
) -> None:
    store = Pkcs11KeyStore.from_settings(softhsm_token.settings())
    store.generate_token_key(TOKEN_LABELS["root"], "ecdsa-p256")
    store.close()
    with runtime.sessions() as session:
        before = {ca.name: ca.key_blob for ca in session.scalars(select(CertificateAuthority))}

    refused = keys_cli(settings, softhsm_token, "migrate", "--to", "pkcs11", expect=1)
    assert "another key labelled 'roamsign-ca-root'" in refused.stderr

    with runtime.sessions() as session:
        after = {ca.name: ca.key_blob for ca in session.scalars(select(CertificateAuthority))}
    assert after == before  # nothing replaced: the software keys are still there
    assert token_label(after["root"]) is None
