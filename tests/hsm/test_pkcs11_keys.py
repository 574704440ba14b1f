"""People's keys in the pkcs11 store: generated in the token, kept wrapped, signed inside it."""

from __future__ import annotations

import hashlib
from typing import Any

import PyKCS11
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from app.crypto.keystore import KeyAlgorithm, new_private_key, sign_digest_with
from app.crypto.pkcs11 import KeyBlobRejected, KeyNotExportable, Pkcs11KeyStore
from app.crypto.pkcs11_format import KeyBlob, key_pair_templates, verify_digest
from tests.hsm.conftest import SoftHsmToken

HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def _session_objects(store: Pkcs11KeyStore) -> int:
    with store._token.session() as session:
        return len(session.findObjects([(PyKCS11.CKA_TOKEN, False)]))


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048", "rsa-3072"])
def test_signatures_verify_as_software_signatures_do(
    key_store: Pkcs11KeyStore, algorithm: KeyAlgorithm
) -> None:
    generated = key_store.generate("cred-1", algorithm)
    paddings = ["pkcs1v15"] if algorithm == "ecdsa-p256" else ["pkcs1v15", "pss"]
    for hash_name, hash_function in HASHES.items():
        digest = hash_function(b"Baucar Bayaran PV-2026-000123").digest()
        for rsa_padding in paddings:
            signature = key_store.sign_digest(
                "cred-1",
                generated.blob,
                digest,
                hash_name,
                rsa_padding,  # type: ignore[arg-type]
            )
            verify_digest(generated.public_key, signature, digest, hash_name, rsa_padding)  # type: ignore[arg-type]
            with pytest.raises(InvalidSignature):
                verify_digest(
                    generated.public_key, signature, bytes(len(digest)), hash_name, rsa_padding
                )  # type: ignore[arg-type]


def test_verify_digest_accepts_exactly_what_sign_digest_with_makes() -> None:
    digest = hashlib.sha384(b"document").digest()
    key = new_private_key("rsa-2048")
    for rsa_padding, salt in (("pkcs1v15", None), ("pss", None), ("pss", 20)):
        signature = sign_digest_with(key, digest, "sha384", rsa_padding, salt)  # type: ignore[arg-type]
        verify_digest(key.public_key(), signature, digest, "sha384", rsa_padding, salt)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_an_imported_software_key_signs_as_the_software_key_does(
    key_store: Pkcs11KeyStore, algorithm: KeyAlgorithm
) -> None:
    key = new_private_key(algorithm)
    imported = key_store.import_private_key("cred-2", key)
    digest = hashlib.sha256(b"tender ePerolehan 42").digest()
    token_signature = key_store.sign_digest("cred-2", imported.blob, digest, "sha256")
    software_signature = sign_digest_with(key, digest, "sha256")
    if isinstance(key, rsa.RSAPrivateKey):
        # PKCS#1 v1.5 is deterministic: the same key and digest give the same bytes.
        assert token_signature == software_signature
        pss = key_store.sign_digest("cred-2", imported.blob, digest, "sha256", "pss", 32)
        verify_digest(key.public_key(), pss, digest, "sha256", "pss", 32)
    else:
        # ECDSA is randomised; both are DER SEQUENCE {r, s} that the same public key accepts.
        utils.decode_dss_signature(token_signature)
        key.public_key().verify(
            token_signature, digest, ec.ECDSA(utils.Prehashed(ec.hashes.SHA256()))
        )
        verify_digest(key.public_key(), software_signature, digest, "sha256")


def test_a_blob_opens_only_under_its_own_key_id_and_unaltered(key_store: Pkcs11KeyStore) -> None:
    generated = key_store.generate("cred-a", "ecdsa-p256")
    other = key_store.generate("cred-b", "ecdsa-p256")
    digest = hashlib.sha256(b"x").digest()
    with pytest.raises(KeyBlobRejected):
        key_store.sign_digest("cred-b", generated.blob, digest, "sha256")
    # Relabelled: a's wrapped key under b's id (the header rewritten, the tag kept).
    parsed = KeyBlob.decode(generated.blob, "cred-a")
    relabelled = KeyBlob("cred-b", parsed.algorithm, parsed.kek_id, parsed.wrapped, parsed.tag)
    with pytest.raises(KeyBlobRejected):
        key_store.sign_digest("cred-b", relabelled.encode(), digest, "sha256")
    # Swapped: b's tag on a's blob; and one flipped bit in the wrapped key.
    swapped = generated.blob[:-32] + other.blob[-32:]
    flipped = bytearray(generated.blob)
    flipped[-40] ^= 1
    for blob in (swapped, bytes(flipped), generated.blob[:-1], b"", b"RSK11"):
        with pytest.raises(KeyBlobRejected):
            key_store.sign_digest("cred-a", blob, digest, "sha256")


def test_the_store_hands_out_no_private_key(key_store: Pkcs11KeyStore) -> None:
    generated = key_store.generate("cred-1", "ecdsa-p256")
    with pytest.raises(KeyNotExportable):
        key_store.private_key("cred-1", generated.blob)


def test_generated_keys_are_wrapped_not_stored(key_store: Pkcs11KeyStore) -> None:
    key_store.generate("first", "ecdsa-p256")  # creates the KEK and its MAC key
    before = key_store.count_token_objects()
    blobs = [key_store.generate(f"cred-{i}", "ecdsa-p256").blob for i in range(50)]
    assert key_store.count_token_objects() == before == 2
    assert _session_objects(key_store) == 0
    assert len({blob[-32:] for blob in blobs}) == 50


def test_unwrapped_keys_are_sensitive_and_not_extractable(key_store: Pkcs11KeyStore) -> None:
    generated = key_store.generate("cred-1", "ecdsa-p256")
    key_store.sign_digest("cred-1", generated.blob, hashlib.sha256(b"x").digest(), "sha256")
    handle = key_store._unwrapped.peek("cred-1")
    with key_store._token.session() as session:
        sensitive, extractable, token = session.getAttributeValue(
            handle, [PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE, PyKCS11.CKA_TOKEN]
        )
        assert (sensitive, extractable, token) == (True, False, False)
        # PyKCS11 answers None for an attribute the token refuses to reveal.
        assert session.getAttributeValue(handle, [PyKCS11.CKA_VALUE], allAsBinary=True) == [None]
        kek = key_store._wrapping_kek(session).wrap
        with pytest.raises(PyKCS11.PyKCS11Error, match="CKR_KEY_UNEXTRACTABLE"):
            session.wrapKey(kek, handle, PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_WRAP_PAD))


def _count_unwraps(store: Pkcs11KeyStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = store._unwrap

    def counting(session: Any, blob: KeyBlob) -> Any:
        calls.append(blob.key_id)
        return original(session, blob)

    monkeypatch.setattr(store, "_unwrap", counting)
    return calls


def test_forget_destroys_the_unwrapped_key_at_once(
    key_store: Pkcs11KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    unwraps = _count_unwraps(key_store, monkeypatch)
    generated = key_store.generate("cred-1", "ecdsa-p256")
    digest = hashlib.sha256(b"x").digest()
    key_store.sign_digest("cred-1", generated.blob, digest, "sha256")
    key_store.sign_digest("cred-1", generated.blob, digest, "sha256")
    assert unwraps == ["cred-1"] and key_store.cached_keys == 1
    handle = key_store._unwrapped.peek("cred-1")

    key_store.forget("cred-1")

    assert key_store.cached_keys == 0 and _session_objects(key_store) == 0
    with key_store._token.session() as session, pytest.raises(PyKCS11.PyKCS11Error):
        session.sign(handle, digest, PyKCS11.Mechanism(PyKCS11.CKM_ECDSA))
    key_store.sign_digest("cred-1", generated.blob, digest, "sha256")
    assert unwraps == ["cred-1", "cred-1"]
    key_store.forget("unknown")  # nothing cached: nothing to do


def test_the_cache_never_exceeds_its_bound(
    softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = softhsm_token.settings()
    store = Pkcs11KeyStore.open(
        settings.pkcs11_module, softhsm_token.label, "user-pin-4711", cache_size=4
    )
    unwraps = _count_unwraps(store, monkeypatch)
    keys = [(f"cred-{i}", store.generate(f"cred-{i}", "ecdsa-p256")) for i in range(10)]
    digest = hashlib.sha256(b"x").digest()
    for key_id, generated in keys * 2:
        signature = store.sign_digest(key_id, generated.blob, digest, "sha256")
        verify_digest(generated.public_key, signature, digest, "sha256")
        assert store.cached_keys <= 4
        assert _session_objects(store) <= 4  # evicted keys are destroyed, not just dropped
    assert len(unwraps) == 20  # round-robin over 10 keys defeats an LRU of 4
    for key_id, generated in keys[-4:]:
        store.sign_digest(key_id, generated.blob, digest, "sha256")
    assert len(unwraps) == 20  # the last four are the cached four
    store.close()


def test_a_renewed_blob_under_the_same_id_replaces_the_cached_key(
    key_store: Pkcs11KeyStore,
) -> None:
    old = key_store.generate("cred-1", "ecdsa-p256")
    digest = hashlib.sha256(b"x").digest()
    key_store.sign_digest("cred-1", old.blob, digest, "sha256")
    new = key_store.generate("cred-1", "ecdsa-p256")
    signature = key_store.sign_digest("cred-1", new.blob, digest, "sha256")
    verify_digest(new.public_key, signature, digest, "sha256")
    assert key_store.cached_keys == 1 and _session_objects(key_store) == 1


def test_a_cache_of_zero_unwraps_signs_and_destroys_each_time(softhsm_token: SoftHsmToken) -> None:
    store = Pkcs11KeyStore.open(
        softhsm_token.module, softhsm_token.label, "user-pin-4711", cache_size=0
    )
    generated = store.generate("cred-1", "rsa-2048")
    digest = hashlib.sha512(b"x").digest()
    signature = store.sign_digest("cred-1", generated.blob, digest, "sha512", "pss")
    verify_digest(generated.public_key, signature, digest, "sha512", "pss")
    assert store.cached_keys == 0 and _session_objects(store) == 0
    store.close()


def test_self_test_passes_and_leaves_nothing_behind(key_store: Pkcs11KeyStore) -> None:
    key_store.self_test()
    key_store.self_test()
    assert key_store.count_token_objects() == 2
    assert _session_objects(key_store) == 0


def test_digest_length_and_hash_are_checked(key_store: Pkcs11KeyStore) -> None:
    generated = key_store.generate("cred-1", "ecdsa-p256")
    with pytest.raises(ValueError, match="digest length"):
        key_store.sign_digest("cred-1", generated.blob, b"short", "sha256")
    with pytest.raises(ValueError, match="hash"):
        key_store.sign_digest("cred-1", generated.blob, bytes(32), "md5")
    assert isinstance(generated.public_key, ec.EllipticCurvePublicKey)


def test_wrap_with_trusted_would_need_a_kek_only_the_security_officer_can_mark(
    key_store: Pkcs11KeyStore,
) -> None:
    # Why generated keys do not set CKA_WRAP_WITH_TRUSTED: SoftHSM2 honours it, but only a
    # CKA_TRUSTED wrapping key may then wrap them, and only the SO can mark one trusted (as
    # a public object, which SoftHSM2 does not encrypt under the user PIN at rest).
    public_template, private_template, mechanism = key_pair_templates(
        "ecdsa-p256", token=False, extractable=True
    )
    with key_store._token.session() as session:
        kek = key_store._wrapping_kek(session).wrap
        public, private = session.generateKeyPair(
            public_template, [*private_template, (PyKCS11.CKA_WRAP_WITH_TRUSTED, True)], mechanism
        )
        with pytest.raises(PyKCS11.PyKCS11Error, match="CKR_KEY_NOT_WRAPPABLE"):
            session.wrapKey(kek, private, PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_WRAP_PAD))
        with pytest.raises(PyKCS11.PyKCS11Error, match="CKR_ATTRIBUTE_READ_ONLY"):
            session.setAttributeValue(kek, [(PyKCS11.CKA_TRUSTED, True)])
        session.destroyObject(private)
        session.destroyObject(public)
