"""The token connection: threads, forked processes, start-up errors, a token that goes away."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import PyKCS11
import pytest

from app.crypto.pkcs11 import (
    ModuleNotLoadable,
    Pkcs11KeyStore,
    TokenNotFound,
    TokenPinRejected,
    TokenUnavailable,
)
from app.crypto.pkcs11_format import verify_digest
from app.errors import ConfigurationError
from tests.hsm.conftest import USER_PIN, SoftHsmToken

DIGEST = hashlib.sha256(b"Baucar Bayaran PV-2026-000123").digest()


def test_eight_threads_sign_two_hundred_times_each(softhsm_token: SoftHsmToken) -> None:
    # 16 keys through a cache of 4 with a pool of 4 sessions: threads wait for sessions,
    # and evict (and destroy) keys that other threads have just looked up.
    store = Pkcs11KeyStore.open(
        softhsm_token.module, softhsm_token.label, USER_PIN, cache_size=4, pool_size=4
    )
    keys = [(f"cred-{i}", store.generate(f"cred-{i}", "ecdsa-p256")) for i in range(16)]
    start = threading.Barrier(8)

    def worker(thread: int) -> int:
        start.wait()
        for n in range(200):
            key_id, generated = keys[(thread * 7 + n) % len(keys)]
            digest = hashlib.sha256(f"{thread}/{n}".encode()).digest()
            verify_digest(
                generated.public_key,
                store.sign_digest(key_id, generated.blob, digest, "sha256"),
                digest,
                "sha256",
            )
        return 200

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 1600
    assert store.cached_keys <= 4
    store.close()


def _sign_in_child(
    store: Pkcs11KeyStore, blob: bytes, results: multiprocessing.Queue[object]
) -> None:
    try:
        results.put(store.sign_digest("cred-1", blob, DIGEST, "sha256"))
        store.self_test()
        results.put("ok")
    except Exception as error:  # reported to the parent, which fails the test
        results.put(repr(error))


def test_a_forked_process_initialises_the_module_again_and_signs(key_store: Pkcs11KeyStore) -> None:
    generated = key_store.generate("cred-1", "ecdsa-p256")
    key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256")  # cached in the parent
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_sign_in_child, args=(key_store, generated.blob, results))
    child.start()
    signature, status = results.get(timeout=60), results.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0 and status == "ok", status
    assert isinstance(signature, bytes)
    verify_digest(generated.public_key, signature, DIGEST, "sha256")
    # The parent's sessions and cached key are untouched by the child.
    verify_digest(
        generated.public_key,
        key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256"),
        DIGEST,
        "sha256",
    )


def _one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message
    assert isinstance(error, ConfigurationError)
    return message


def test_a_missing_module_names_its_setting(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    for module in (str(tmp_path / "nothing.so"), "/etc/hostname"):
        with pytest.raises(ModuleNotLoadable) as raised:
            Pkcs11KeyStore.from_settings(softhsm_token.settings(pkcs11_module=module))
        assert _one_line(raised.value).startswith("ROAMSIGN_PKCS11_MODULE: ")
    production = softhsm_token.settings(profile="production", pkcs11_module="")
    assert production.pkcs11_module == ""
    with pytest.raises(ModuleNotLoadable, match=r"^ROAMSIGN_PKCS11_MODULE is not set"):
        Pkcs11KeyStore.from_settings(production)


def test_an_unknown_token_label_names_its_setting(softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(TokenNotFound) as raised:
        Pkcs11KeyStore.from_settings(softhsm_token.settings(pkcs11_token_label="no-such-token"))
    assert _one_line(raised.value).startswith("ROAMSIGN_PKCS11_TOKEN_LABEL: ")


def test_a_wrong_or_missing_pin_names_its_setting(
    softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin-9999\n")
    with pytest.raises(TokenPinRejected) as raised:
        Pkcs11KeyStore.from_settings(softhsm_token.settings(pkcs11_pin_file=wrong))
    message = _one_line(raised.value)
    assert message.startswith("ROAMSIGN_PKCS11_PIN_FILE: ") and "not-the-pin" not in message
    for pin_file in (tmp_path / "absent.pin", None):
        with pytest.raises(TokenPinRejected, match=r"^ROAMSIGN_PKCS11_PIN_FILE"):
            Pkcs11KeyStore.from_settings(softhsm_token.settings(pkcs11_pin_file=pin_file))
    # The right PIN still works: nothing was locked by the wrong one.
    Pkcs11KeyStore.from_settings(softhsm_token.settings()).close()


def _finalize_underneath(module: str) -> None:
    """Another part of the process finalises the library: every session dies at once."""
    other = PyKCS11.PyKCS11Lib()
    other.load(module)
    other.lib.C_Finalize()


def test_a_finalised_module_answers_unavailable_then_recovers(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore
) -> None:
    generated = key_store.generate("cred-1", "ecdsa-p256")
    key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256")
    key_store.secret_key("roamsign-otp-mac")
    mac = key_store.mac("roamsign-otp-mac", b"otp")

    _finalize_underneath(softhsm_token.module)

    with pytest.raises(TokenUnavailable):
        key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256")
    signature = key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256")
    verify_digest(generated.public_key, signature, DIGEST, "sha256")
    assert key_store.mac("roamsign-otp-mac", b"otp") == mac
    key_store.self_test()


def test_a_removed_token_answers_unavailable_until_it_is_back(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore
) -> None:
    generated = key_store.generate("cred-1", "ecdsa-p256")
    key_store.self_test()
    tokens = softhsm_token.directory / "tokens"
    away = softhsm_token.directory / "tokens-away"

    shutil.move(tokens, away)
    tokens.mkdir()
    # The library still answers from memory; the readiness probe reads the token itself.
    with pytest.raises(TokenUnavailable):
        key_store.self_test()
    for _ in range(3):  # every call tries again, and fails as long as the token is away
        with pytest.raises(TokenUnavailable, match="ROAMSIGN_PKCS11_TOKEN_LABEL"):
            key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256")

    tokens.rmdir()
    shutil.move(away, tokens)
    key_store.self_test()
    signature = key_store.sign_digest("cred-1", generated.blob, DIGEST, "sha256")
    verify_digest(generated.public_key, signature, DIGEST, "sha256")
