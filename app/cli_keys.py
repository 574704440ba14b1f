"""`python -m app keys ...`: the key store's own commands (self-test, migrate to a token)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from app.crypto.keys import DerivedKeys
from app.crypto.keystore import KeyStore, SoftwareKeyStore
from app.settings import get_settings

if TYPE_CHECKING:
    from app.cli import ProgressBar
    from app.crypto.pkcs11 import Pkcs11KeyStore

SELF_TEST_DIGEST = hashlib.sha256(b"roamsign keys self-test").digest()


def add_keys_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    keys = commands.add_parser("keys", help="the key store").add_subparsers(title="keys")
    command(
        keys,
        "self-test",
        "sign and verify a test digest with the configured key store; exit 1 on failure",
        cmd_keys_self_test,
    )
    migrate = command(
        keys,
        "migrate",
        "move every software key into the PKCS#11 token (idempotent, resumable)",
        cmd_keys_migrate,
    )
    migrate.add_argument("--to", required=True, choices=["pkcs11"], dest="target")
    migrate.add_argument(
        "--keep-master-key",
        action="store_true",
        help="keep the master key file after the move (while software processes still run); "
        "delete it once every process uses the token: the token's secrets were imported from it",
    )
    command(
        keys,
        "init",
        "a new deployment on a PKCS#11 token: generate its MAC and sealing secrets in the token "
        "(those present are kept; an existing deployment runs `keys migrate` instead)",
        cmd_keys_init,
    )


def cmd_keys_init(_args: argparse.Namespace) -> int:
    from app.crypto.pkcs11 import Pkcs11KeyStore
    from app.crypto.pkcs11_secrets import provision_token_secrets

    settings = get_settings()
    if settings.key_store != "pkcs11":
        print("error: keys init is for ROAMSIGN_KEY_STORE=pkcs11", file=sys.stderr)
        return 1
    token = Pkcs11KeyStore.from_settings(settings)
    try:
        token.self_test()
        provisioned = provision_token_secrets(token, None)
    finally:
        token.close()
    made = sum(1 for secret in provisioned if secret.outcome == "generated")
    print(f"secrets: {made} generated in the token, {len(provisioned) - made} there already")
    return 0


def cmd_keys_self_test(_args: argparse.Namespace) -> int:
    from app.runtime import build_key_store

    settings = get_settings()
    store = build_key_store(settings)
    try:
        store.self_test()
        _sign_and_verify(store)
    except Exception as error:
        print(f"error: key store {settings.key_store}: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:
        store.close()
    where = (
        f"token {settings.pkcs11_token_label!r}" if settings.key_store == "pkcs11" else "software"
    )
    print(f"key store {settings.key_store} ({where}): a test digest signed and verified")
    return 0


def _sign_and_verify(store: KeyStore) -> None:
    generated = store.generate("keys-self-test", "ecdsa-p256")
    signature = store.sign_digest("keys-self-test", generated.blob, SELF_TEST_DIGEST, "sha256")
    public_key = generated.public_key
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, SELF_TEST_DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def cmd_keys_migrate(args: argparse.Namespace) -> int:
    from app.crypto.pkcs11 import Pkcs11KeyStore
    from app.db import make_engine, make_sessionmaker
    from app.services.key_migration import KeyMigration

    settings = get_settings()
    master_key_file = settings.master_key_file
    if master_key_file is not None and not master_key_file.exists():
        # Checked before reading it: the demo profile would make a new one.
        print(f"nothing to migrate: no master key file at {master_key_file} (moved already)")
        return 0
    derived = DerivedKeys.from_master(settings.load_master_key())
    token = Pkcs11KeyStore.from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        token.self_test()
        migration = KeyMigration(
            make_sessionmaker(engine),
            SoftwareKeyStore(derived.key_store),
            token,
            progress=_progress(sys.stderr.isatty()),
        )
        report = migration.run()
        if not report.ok:
            for failure in report.failed[:10]:
                print(f"not verified: {failure}", file=sys.stderr)
            print(
                f"error: {len(report.failed)} keys did not verify in the token; nothing was "
                "replaced, the software keys stay",
                file=sys.stderr,
            )
            return 1
        secrets = move_secrets(token, derived)
    finally:
        token.close()
        engine.dispose()
    print(
        f"moved {report.moved_ca_keys} CA keys, {report.moved_service_keys} service keys and "
        f"{report.moved_credential_keys} credential keys into the token "
        f"({report.already_moved} there already); {secrets}"
    )
    if args.keep_master_key:
        print(
            "the master key file stays: delete it once every process uses the token (with it, "
            "the token's secrets can be derived again)"
        )
    elif master_key_file is not None:
        wipe_file(master_key_file)
        print(f"master key file {master_key_file} wiped")
    if settings.key_store != "pkcs11":
        print("now set ROAMSIGN_KEY_STORE=pkcs11 and restart the service")
    return 0


def wipe_file(path: Path) -> None:
    """Overwrite `path` with zeros, flush it to disk, then remove it. (A copy-on-write or
    journaling file system may keep old blocks: backups and snapshots must go too.)"""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.write(bytes(size))
        file.flush()
        os.fsync(file.fileno())
    path.unlink()


def move_secrets(token: Pkcs11KeyStore, derived: DerivedKeys) -> str:
    """The MAC and sealing secrets into the token, imported with today's values so that every
    stored MAC, token, audit chain and sealed message stays valid (nothing is re-MACed)."""
    from app.crypto.pkcs11_secrets import provision_token_secrets

    provisioned = provision_token_secrets(token, derived)
    return f"secrets: {len(provisioned)} in the token"


def _progress(interactive: bool) -> Callable[[str, int, int], None]:
    """A bar per pass on a terminal; nothing otherwise (the summary line says it all)."""
    from app.cli import ProgressBar

    bars: dict[str, ProgressBar] = {}

    def show(step: str, done: int, total: int) -> None:
        if not interactive or total == 0:
            return
        bar = bars.get(step)
        if bar is None:
            print(f"{step}:", file=sys.stderr)
            bar = bars[step] = ProgressBar(total, sys.stderr)
        if done == total or done % max(1, total // 100) == 0:
            bar.show(done)
        if done == total:
            bar.finish()

    return show


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
