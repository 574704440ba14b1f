"""Private keys sealed at rest, digests signed with them; OTP, PIN and MAC helpers."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from app.crypto.keys import SoftwareMacKey
from app.crypto.keystore import (
    HASHES,
    GeneratedKey,
    KeyAlgorithm,
    PublicKey,
    SoftwareKeyStore,
)
from app.crypto.sealing import SealBroken
from app.crypto.secrets import (
    OtpBinding,
    generate_otp,
    macs_equal,
    otp_mac,
    pin_mac,
)

KEY_ID = "cred-7f3a9c0e"
MESSAGE = b"Baucar Bayaran PV-2026-000123"


@pytest.fixture(scope="module")
def store() -> SoftwareKeyStore:
    return SoftwareKeyStore(secrets.token_bytes(32))


@pytest.fixture(scope="module", params=["ecdsa-p256", "rsa-2048"])
def generated(request: pytest.FixtureRequest, store: SoftwareKeyStore) -> GeneratedKey:
    algorithm: KeyAlgorithm = request.param
    return store.generate(KEY_ID, algorithm)


def verify(public_key: PublicKey, signature: bytes, digest: bytes, hash_algorithm: str) -> None:
    """Raises InvalidSignature unless `signature` is over `digest` (PKCS#1 v1.5 for RSA)."""
    prehashed = utils.Prehashed(HASHES[hash_algorithm]())
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
    else:
        public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)


def spki(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pkcs8_der(store: SoftwareKeyStore, key_id: str, blob: bytes) -> bytes:
    return store.private_key(key_id, blob).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def flipped(blob: bytes, index: int) -> bytes:
    spoiled = bytearray(blob)
    spoiled[index] ^= 0x01
    return bytes(spoiled)


# Key generation and sealing


def test_generate_gives_the_requested_key_type(store: SoftwareKeyStore) -> None:
    ec_key = store.generate("a", "ecdsa-p256").public_key
    rsa_key = store.generate("b", "rsa-2048").public_key
    assert isinstance(ec_key, ec.EllipticCurvePublicKey)
    assert isinstance(ec_key.curve, ec.SECP256R1)
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    assert rsa_key.key_size == 2048
    assert rsa_key.public_numbers().e == 65537


def test_the_blob_opens_to_the_key_behind_the_public_key(
    store: SoftwareKeyStore, generated: GeneratedKey
) -> None:
    private = store.private_key(KEY_ID, generated.blob)
    assert spki(private.public_key()) == spki(generated.public_key)


def test_the_blob_holds_no_plaintext_key(store: SoftwareKeyStore, generated: GeneratedKey) -> None:
    der = pkcs8_der(store, KEY_ID, generated.blob)
    assert der not in generated.blob
    # Not even a recognisable piece of it: the PKCS#8 header or a 16-byte window.
    assert der[:16] not in generated.blob
    assert der[len(der) // 2 : len(der) // 2 + 16] not in generated.blob
    with pytest.raises(ValueError):
        serialization.load_der_private_key(generated.blob, password=None)


def test_sealing_the_same_key_twice_gives_different_blobs(
    store: SoftwareKeyStore, generated: GeneratedKey
) -> None:
    private = store.private_key(KEY_ID, generated.blob)
    again = store.seal_key(KEY_ID, private)
    assert again != generated.blob
    assert pkcs8_der(store, KEY_ID, again) == pkcs8_der(store, KEY_ID, generated.blob)


def test_a_blob_opens_only_under_its_own_key_id(
    store: SoftwareKeyStore, generated: GeneratedKey
) -> None:
    for other_id in ("cred-7f3a9c0f", "", KEY_ID + " ", KEY_ID.upper()):
        with pytest.raises(SealBroken):
            store.private_key(other_id, generated.blob)
    with pytest.raises(SealBroken):
        store.sign_digest("cred-other", generated.blob, hashlib.sha256(MESSAGE).digest(), "sha256")


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_a_blob_with_one_flipped_bit_does_not_open(
    store: SoftwareKeyStore, generated: GeneratedKey, where: str
) -> None:
    index = {"nonce": 0, "ciphertext": 12 + 20, "tag": -1}[where]
    with pytest.raises(SealBroken):
        store.private_key(KEY_ID, flipped(generated.blob, index))


@pytest.mark.parametrize("length", [0, 1, 12, 28])
def test_a_truncated_blob_does_not_open(
    store: SoftwareKeyStore, generated: GeneratedKey, length: int
) -> None:
    with pytest.raises(SealBroken):
        store.private_key(KEY_ID, generated.blob[:length])


def test_a_blob_does_not_open_under_another_wrapping_key(generated: GeneratedKey) -> None:
    other = SoftwareKeyStore(secrets.token_bytes(32))
    with pytest.raises(SealBroken):
        other.private_key(KEY_ID, generated.blob)


def test_self_test_passes_with_a_usable_key(store: SoftwareKeyStore) -> None:
    store.self_test()


def test_self_test_fails_with_an_unusable_key() -> None:
    with pytest.raises(ValueError):
        SoftwareKeyStore(b"too short").self_test()


# Signing digests


@pytest.mark.parametrize("hash_algorithm", ["sha256", "sha384", "sha512"])
def test_signature_over_the_digest_verifies(
    store: SoftwareKeyStore, generated: GeneratedKey, hash_algorithm: str
) -> None:
    digest = hashlib.new(hash_algorithm, MESSAGE).digest()
    signature = store.sign_digest(KEY_ID, generated.blob, digest, hash_algorithm)
    verify(generated.public_key, signature, digest, hash_algorithm)
    # The digest is signed as given, not hashed again: it verifies over the message itself.
    if isinstance(generated.public_key, ec.EllipticCurvePublicKey):
        generated.public_key.verify(signature, MESSAGE, ec.ECDSA(HASHES[hash_algorithm]()))
    else:
        generated.public_key.verify(
            signature, MESSAGE, padding.PKCS1v15(), HASHES[hash_algorithm]()
        )


def test_signature_does_not_verify_for_another_digest(
    store: SoftwareKeyStore, generated: GeneratedKey
) -> None:
    signature = store.sign_digest(
        KEY_ID, generated.blob, hashlib.sha256(MESSAGE).digest(), "sha256"
    )
    with pytest.raises(InvalidSignature):
        verify(generated.public_key, signature, hashlib.sha256(b"another").digest(), "sha256")


def test_ecdsa_signatures_are_der(store: SoftwareKeyStore) -> None:
    generated = store.generate(KEY_ID, "ecdsa-p256")
    signature = store.sign_digest(
        KEY_ID, generated.blob, hashlib.sha256(MESSAGE).digest(), "sha256"
    )
    r, s = utils.decode_dss_signature(signature)
    assert r > 0
    assert s > 0
    assert utils.encode_dss_signature(r, s) == signature


def test_rsa_pkcs1v15_is_deterministic_and_pss_is_not(store: SoftwareKeyStore) -> None:
    generated = store.generate(KEY_ID, "rsa-2048")
    digest = hashlib.sha256(MESSAGE).digest()
    first = store.sign_digest(KEY_ID, generated.blob, digest, "sha256")
    assert store.sign_digest(KEY_ID, generated.blob, digest, "sha256", "pkcs1v15") == first
    pss = store.sign_digest(KEY_ID, generated.blob, digest, "sha256", "pss")
    assert pss != first
    assert store.sign_digest(KEY_ID, generated.blob, digest, "sha256", "pss") != pss


@pytest.mark.parametrize("hash_algorithm", ["sha256", "sha384", "sha512"])
def test_rsa_pss_salt_is_the_digest_length(store: SoftwareKeyStore, hash_algorithm: str) -> None:
    generated = store.generate(KEY_ID, "rsa-2048")
    assert isinstance(generated.public_key, rsa.RSAPublicKey)
    algorithm = HASHES[hash_algorithm]()
    digest = hashlib.new(hash_algorithm, MESSAGE).digest()
    signature = store.sign_digest(KEY_ID, generated.blob, digest, hash_algorithm, "pss")
    generated.public_key.verify(
        signature,
        digest,
        padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size),
        utils.Prehashed(algorithm),
    )
    with pytest.raises(InvalidSignature):
        generated.public_key.verify(
            signature, digest, padding.PKCS1v15(), utils.Prehashed(algorithm)
        )


def test_rsa_3072_round_trip(store: SoftwareKeyStore) -> None:
    # One test only: a 3072-bit key takes a while to generate.
    generated = store.generate("cred-rsa-3072", "rsa-3072")
    assert isinstance(generated.public_key, rsa.RSAPublicKey)
    assert generated.public_key.key_size == 3072
    assert pkcs8_der(store, "cred-rsa-3072", generated.blob) not in generated.blob
    digest = hashlib.sha384(MESSAGE).digest()
    signature = store.sign_digest("cred-rsa-3072", generated.blob, digest, "sha384")
    assert len(signature) == 384
    verify(generated.public_key, signature, digest, "sha384")
    pss = store.sign_digest("cred-rsa-3072", generated.blob, digest, "sha384", "pss")
    generated.public_key.verify(
        pss,
        digest,
        padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
        utils.Prehashed(hashes.SHA384()),
    )
    with pytest.raises(SealBroken):
        store.private_key(KEY_ID, generated.blob)


@pytest.mark.parametrize(
    ("hash_algorithm", "size"), [("sha256", 48), ("sha384", 32), ("sha512", 32), ("sha256", 0)]
)
def test_a_digest_of_the_wrong_length_is_refused(
    store: SoftwareKeyStore, generated: GeneratedKey, hash_algorithm: str, size: int
) -> None:
    with pytest.raises(ValueError, match="digest length"):
        store.sign_digest(KEY_ID, generated.blob, b"\x01" * size, hash_algorithm)


# OTPs, PINs and MACs

BINDING = OtpBinding(
    request_id="2b1c6f0e-0a51-4c1b-9a43-6d2f3f1d9c11",
    credential_id="c4d9a1f2-7e3b-4f0a-8c55-0b6e2a9d1f34",
    hash_algorithm="sha256",
    document_hash=hashlib.sha256(MESSAGE).hexdigest(),
    signer_id="8a7f1e2d-3c4b-4a59-9e6d-1f0a2b3c4d5e",
)
OTP_KEY = SoftwareMacKey(secrets.token_bytes(32))


def test_otp_mac_is_a_function_of_key_otp_and_binding() -> None:
    assert otp_mac(OTP_KEY, "123456", BINDING) == otp_mac(
        OTP_KEY, "123456", dataclasses.replace(BINDING)
    )
    assert len(otp_mac(OTP_KEY, "123456", BINDING)) == 32


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "2b1c6f0e-0a51-4c1b-9a43-6d2f3f1d9c12"),
        ("credential_id", "c4d9a1f2-7e3b-4f0a-8c55-0b6e2a9d1f35"),
        ("hash_algorithm", "sha384"),
        ("document_hash", hashlib.sha256(b"another document").hexdigest()),
        ("signer_id", "8a7f1e2d-3c4b-4a59-9e6d-1f0a2b3c4d5f"),
    ],
)
def test_otp_mac_changes_with_every_binding_field(field: str, value: str) -> None:
    other = dataclasses.replace(BINDING, **{field: value})
    assert otp_mac(OTP_KEY, "123456", other) != otp_mac(OTP_KEY, "123456", BINDING)


def test_otp_mac_changes_with_the_otp_and_the_key() -> None:
    mac = otp_mac(OTP_KEY, "123456", BINDING)
    assert otp_mac(OTP_KEY, "123457", BINDING) != mac
    assert otp_mac(OTP_KEY, "1234560", BINDING) != mac
    assert otp_mac(SoftwareMacKey(secrets.token_bytes(32)), "123456", BINDING) != mac


def test_otp_binding_fields_cannot_be_shifted_into_each_other() -> None:
    # Length-prefixed: moving characters across a field boundary is another binding.
    shifted = dataclasses.replace(
        BINDING,
        request_id=BINDING.request_id + BINDING.credential_id[:1],
        credential_id=BINDING.credential_id[1:],
    )
    assert shifted.encode() != BINDING.encode()
    assert otp_mac(OTP_KEY, "123456", shifted) != otp_mac(OTP_KEY, "123456", BINDING)
    moved_into_otp = dataclasses.replace(BINDING, signer_id=BINDING.signer_id + "1")
    assert otp_mac(OTP_KEY, "23456", moved_into_otp) != otp_mac(OTP_KEY, "123456", BINDING)


def test_generate_otp_is_six_random_digits() -> None:
    otps = [generate_otp() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9]{6}", otp) for otp in otps)
    assert len(set(otps)) > 1900
    # Zero-padded, not a number that loses its leading zeros (about 200 of 2000 start with 0).
    assert any(otp.startswith("0") for otp in otps)
    assert {otp[0] for otp in otps} == set("0123456789")


def test_pin_mac_is_bound_to_the_credential() -> None:
    pepper = SoftwareMacKey(secrets.token_bytes(32))
    mac = pin_mac(pepper, "credential-a", "583920")
    assert pin_mac(pepper, "credential-a", "583920") == mac
    assert pin_mac(pepper, "credential-b", "583920") != mac
    assert pin_mac(pepper, "credential-a", "583921") != mac
    assert pin_mac(SoftwareMacKey(secrets.token_bytes(32)), "credential-a", "583920") != mac
    # Length-prefixed: the boundary between id and PIN is part of the MAC.
    assert pin_mac(pepper, "credential-a5", "83920") != mac
    assert len(mac) == 32


def test_macs_equal() -> None:
    pepper = SoftwareMacKey(secrets.token_bytes(32))
    mac = pin_mac(pepper, "credential-a", "583920")
    assert macs_equal(mac, pin_mac(pepper, "credential-a", "583920")) is True
    assert macs_equal(mac, pin_mac(pepper, "credential-a", "583921")) is False
    assert macs_equal(mac, b"") is False
    assert macs_equal(None, mac) is False
    assert macs_equal(None, b"") is False
