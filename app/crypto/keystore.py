"""Private keys at rest: sealed with AES-256-GCM, the key id as associated data.

`KeyStore` is the one interface the services use, so an HSM-backed store can replace
`SoftwareKeyStore` without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from app.crypto.sealing import open_sealed, seal

KeyAlgorithm = Literal["ecdsa-p256", "rsa-2048", "rsa-3072"]
HashAlgorithmName = Literal["sha256", "sha384", "sha512"]
RsaPadding = Literal["pkcs1v15", "pss"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

KEY_ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ecdsa-p256", "rsa-2048", "rsa-3072")
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def new_private_key(algorithm: KeyAlgorithm) -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = {"rsa-2048": 2048, "rsa-3072": 3072}[algorithm]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def sign_digest_with(
    key: PrivateKey,
    digest: bytes,
    hash_algorithm: str,
    rsa_padding: RsaPadding = "pkcs1v15",
    pss_salt_length: int | None = None,
) -> bytes:
    """Sign a precomputed digest: DER ECDSA, or RSA PKCS#1 v1.5 / PSS (MGF1 with the same hash;
    the salt is the digest's length unless `pss_salt_length` says otherwise)."""
    algorithm = HASHES[hash_algorithm]()
    if len(digest) != algorithm.digest_size:
        raise ValueError("digest length does not match the hash algorithm")
    prehashed = utils.Prehashed(algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(digest, ec.ECDSA(prehashed))
    chosen: padding.AsymmetricPadding = (
        padding.PSS(
            mgf=padding.MGF1(algorithm),
            salt_length=algorithm.digest_size if pss_salt_length is None else pss_salt_length,
        )
        if rsa_padding == "pss"
        else padding.PKCS1v15()
    )
    return key.sign(digest, chosen, prehashed)


@dataclass(frozen=True)
class GeneratedKey:
    blob: bytes
    public_key: PublicKey


class KeyStore(Protocol):
    def generate(self, key_id: str, algorithm: KeyAlgorithm) -> GeneratedKey:
        """Create a key pair for `key_id`; the blob is what the caller stores."""
        ...

    def private_key(self, key_id: str, blob: bytes) -> PrivateKey:
        """The usable private key behind a blob (refused if altered or under another id)."""
        ...

    def sign_digest(
        self,
        key_id: str,
        blob: bytes,
        digest: bytes,
        hash_algorithm: str,
        rsa_padding: RsaPadding = "pkcs1v15",
        pss_salt_length: int | None = None,
    ) -> bytes: ...

    def self_test(self) -> None:
        """Raise if the store cannot seal and open keys (used by /readyz)."""
        ...

    def forget(self, key_id: str) -> None:
        """Drop this process's usable copy of `key_id` now (revocation, renewal, a PIN lock)."""
        ...

    def close(self) -> None: ...


class SoftwareKeyStore:
    """Keys sealed under a key derived from the master key; PKCS#8 DER inside the seal."""

    def __init__(self, wrapping_key: bytes) -> None:
        self._wrapping_key = wrapping_key

    def generate(self, key_id: str, algorithm: KeyAlgorithm) -> GeneratedKey:
        key = new_private_key(algorithm)
        return GeneratedKey(blob=self.seal_key(key_id, key), public_key=key.public_key())

    def seal_key(self, key_id: str, key: PrivateKey) -> bytes:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return seal(self._wrapping_key, der, _associated_data(key_id))

    def private_key(self, key_id: str, blob: bytes) -> PrivateKey:
        der = open_sealed(self._wrapping_key, blob, _associated_data(key_id))
        # The GCM tag already proves this is the key we generated, unaltered; RSA's full
        # validation (tens of milliseconds) would buy nothing on every signature.
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError("unsupported key type in the key store")
        return key

    def sign_digest(
        self,
        key_id: str,
        blob: bytes,
        digest: bytes,
        hash_algorithm: str,
        rsa_padding: RsaPadding = "pkcs1v15",
        pss_salt_length: int | None = None,
    ) -> bytes:
        return sign_digest_with(
            self.private_key(key_id, blob), digest, hash_algorithm, rsa_padding, pss_salt_length
        )

    def forget(self, key_id: str) -> None:
        """Nothing to drop: every signature opens the sealed blob anew."""

    def close(self) -> None:
        """Nothing to release."""

    def self_test(self) -> None:
        probe = seal(self._wrapping_key, b"probe", b"self-test")
        if open_sealed(self._wrapping_key, probe, b"self-test") != b"probe":
            raise RuntimeError("key store self-test failed")


def _associated_data(key_id: str) -> bytes:
    return b"roamsign-key:" + key_id.encode()
