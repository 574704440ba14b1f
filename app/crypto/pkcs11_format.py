"""What the pkcs11 key store writes and asks for: the key blob, templates, signing inputs.

Pure functions of their arguments; nothing here talks to a token.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import PyKCS11
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from app.crypto.keystore import HASHES, KeyAlgorithm, PublicKey, RsaPadding
from app.crypto.sealing import SealBroken

BLOB_MAGIC = b"RSK11"
BLOB_VERSION = 1
TAG_LENGTH = 32
_ALGORITHM_CODES: dict[KeyAlgorithm, int] = {"ecdsa-p256": 1, "rsa-2048": 2, "rsa-3072": 3}
_ALGORITHMS = {code: name for name, code in _ALGORITHM_CODES.items()}
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072}
# DER of the namedCurve OID prime256v1 (1.2.840.10045.3.1.7), CKA_EC_PARAMS for P-256.
P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
# RFC 8017 s.9.2 note 1: the DER DigestInfo prefix for each hash, followed by the digest.
_DIGEST_INFO_PREFIX = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_HASH = {
    "sha256": (PyKCS11.CKM_SHA256, PyKCS11.CKG_MGF1_SHA256),
    "sha384": (PyKCS11.CKM_SHA384, PyKCS11.CKG_MGF1_SHA384),
    "sha512": (PyKCS11.CKM_SHA512, PyKCS11.CKG_MGF1_SHA512),
}


class KeyBlobRejected(SealBroken):
    """The blob is not a pkcs11 key blob, was altered, or belongs to another key id."""


@dataclass(frozen=True)
class KeyBlob:
    """A credential's private key wrapped under a key-encryption key in the token.

    The layout is length-prefixed so that no two (key id, algorithm, KEK, wrapped key)
    values share an encoding; `tag` is an HMAC made in the token over everything before it,
    which is what binds the wrapped key to this key id and algorithm.
    """

    key_id: str
    algorithm: KeyAlgorithm
    kek_id: bytes
    wrapped: bytes
    tag: bytes = b""

    def authenticated_part(self) -> bytes:
        key_id = self.key_id.encode()
        return b"".join(
            (
                BLOB_MAGIC,
                struct.pack(
                    ">BBB", BLOB_VERSION, _ALGORITHM_CODES[self.algorithm], len(self.kek_id)
                ),
                self.kek_id,
                struct.pack(">H", len(key_id)),
                key_id,
                struct.pack(">H", len(self.wrapped)),
                self.wrapped,
            )
        )

    def encode(self) -> bytes:
        if len(self.tag) != TAG_LENGTH:
            raise ValueError("a key blob needs its tag")
        return self.authenticated_part() + self.tag

    @classmethod
    def decode(cls, blob: bytes, key_id: str) -> KeyBlob:
        """Parse a blob stored for `key_id`; the caller still checks the tag in the token."""
        try:
            if not blob.startswith(BLOB_MAGIC):
                raise KeyBlobRejected("not a pkcs11 key blob")
            offset = len(BLOB_MAGIC)
            version, algorithm_code, kek_length = struct.unpack_from(">BBB", blob, offset)
            offset += 3
            if version != BLOB_VERSION or algorithm_code not in _ALGORITHMS:
                raise KeyBlobRejected("unknown pkcs11 key blob version or algorithm")
            kek_id = blob[offset : offset + kek_length]
            offset += kek_length
            (id_length,) = struct.unpack_from(">H", blob, offset)
            stored_id = blob[offset + 2 : offset + 2 + id_length].decode()
            offset += 2 + id_length
            (wrapped_length,) = struct.unpack_from(">H", blob, offset)
            wrapped = blob[offset + 2 : offset + 2 + wrapped_length]
            tag = blob[offset + 2 + wrapped_length :]
        except (struct.error, UnicodeDecodeError):
            raise KeyBlobRejected("truncated pkcs11 key blob") from None
        if len(wrapped) != wrapped_length or len(tag) != TAG_LENGTH:
            raise KeyBlobRejected("truncated pkcs11 key blob")
        if stored_id != key_id:
            raise KeyBlobRejected("the key blob belongs to another key id")
        return cls(stored_id, _ALGORITHMS[algorithm_code], kek_id, wrapped, tag)


def key_pair_templates(
    algorithm: KeyAlgorithm, *, token: bool, label: str = "", extractable: bool
) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]], Any]:
    """Public and private templates and the generation mechanism for `algorithm`.

    The private key is sensitive always; `extractable` lets C_WrapKey (only that) take it out.
    """
    named = [(PyKCS11.CKA_LABEL, label), (PyKCS11.CKA_ID, label.encode())] if label else []
    public: list[tuple[int, Any]] = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY),
        (PyKCS11.CKA_TOKEN, token),
        (PyKCS11.CKA_VERIFY, True),
        *named,
    ]
    private: list[tuple[int, Any]] = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
        (PyKCS11.CKA_TOKEN, token),
        (PyKCS11.CKA_PRIVATE, True),
        (PyKCS11.CKA_SENSITIVE, True),
        (PyKCS11.CKA_EXTRACTABLE, extractable),
        (PyKCS11.CKA_SIGN, True),
        *named,
    ]
    if algorithm == "ecdsa-p256":
        public += [(PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC), (PyKCS11.CKA_EC_PARAMS, P256_PARAMS)]
        private.append((PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC))
        return public, private, PyKCS11.Mechanism(PyKCS11.CKM_EC_KEY_PAIR_GEN)
    public += [
        (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA),
        (PyKCS11.CKA_MODULUS_BITS, _RSA_BITS[algorithm]),
        (PyKCS11.CKA_PUBLIC_EXPONENT, (0x01, 0x00, 0x01)),
    ]
    private.append((PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA))
    return public, private, PyKCS11.Mechanism(PyKCS11.CKM_RSA_PKCS_KEY_PAIR_GEN)


def unwrap_template(algorithm: KeyAlgorithm) -> list[tuple[int, Any]]:
    """A session object that signs and never leaves the token, not even wrapped."""
    key_type = PyKCS11.CKK_EC if algorithm == "ecdsa-p256" else PyKCS11.CKK_RSA
    return [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
        (PyKCS11.CKA_KEY_TYPE, key_type),
        (PyKCS11.CKA_TOKEN, False),
        (PyKCS11.CKA_PRIVATE, True),
        (PyKCS11.CKA_SENSITIVE, True),
        (PyKCS11.CKA_EXTRACTABLE, False),
        (PyKCS11.CKA_SIGN, True),
    ]


def secret_key_template(label: str, *, token: bool = True) -> list[tuple[int, Any]]:
    return [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
        (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_GENERIC_SECRET),
        (PyKCS11.CKA_TOKEN, token),
        (PyKCS11.CKA_PRIVATE, True),
        (PyKCS11.CKA_SENSITIVE, True),
        (PyKCS11.CKA_EXTRACTABLE, False),
        (PyKCS11.CKA_SIGN, True),
        (PyKCS11.CKA_VERIFY, True),
        (PyKCS11.CKA_LABEL, label),
    ]


def signing_input(
    algorithm: KeyAlgorithm,
    digest: bytes,
    hash_algorithm: str,
    rsa_padding: RsaPadding = "pkcs1v15",
    pss_salt_length: int | None = None,
) -> tuple[Any, bytes]:
    """The mechanism and the bytes to give C_Sign for a precomputed digest."""
    if hash_algorithm not in HASHES:
        raise ValueError(f"unsupported hash algorithm {hash_algorithm!r}")
    if len(digest) != HASHES[hash_algorithm]().digest_size:
        raise ValueError("digest length does not match the hash algorithm")
    if algorithm == "ecdsa-p256":
        return PyKCS11.Mechanism(PyKCS11.CKM_ECDSA), digest
    if rsa_padding == "pss":
        hash_mechanism, mgf = _PSS_HASH[hash_algorithm]
        salt = len(digest) if pss_salt_length is None else pss_salt_length
        mechanism = PyKCS11.RSA_PSS_Mechanism(PyKCS11.CKM_RSA_PKCS_PSS, hash_mechanism, mgf, salt)
        return mechanism, digest
    return PyKCS11.Mechanism(PyKCS11.CKM_RSA_PKCS), _DIGEST_INFO_PREFIX[hash_algorithm] + digest


def finish_signature(algorithm: KeyAlgorithm, raw: bytes) -> bytes:
    """PKCS#11 gives ECDSA as r || s; X.509, CMS and cryptography want the DER sequence."""
    if algorithm != "ecdsa-p256":
        return raw
    half = len(raw) // 2
    return utils.encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def ec_public_key(ec_point: bytes) -> ec.EllipticCurvePublicKey:
    # CKA_EC_POINT is the uncompressed point wrapped in a DER OCTET STRING (PKCS#11 s.2.3.3).
    if ec_point[:1] == b"\x04" and len(ec_point) == 65:
        point = ec_point
    elif ec_point[:1] == b"\x04" and ec_point[1] == len(ec_point) - 2:
        point = ec_point[2:]
    else:
        raise ValueError("unexpected CKA_EC_POINT encoding")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def rsa_public_key(modulus: bytes, exponent: bytes) -> rsa.RSAPublicKey:
    numbers = rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big"))
    return numbers.public_key()


def algorithm_of(public_key: PublicKey) -> KeyAlgorithm:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ecdsa-p256"
    if public_key.key_size in (2048, 3072):
        return "rsa-3072" if public_key.key_size == 3072 else "rsa-2048"
    raise ValueError(f"unsupported RSA key size {public_key.key_size}")


def verify_digest(
    public_key: PublicKey,
    signature: bytes,
    digest: bytes,
    hash_algorithm: str,
    rsa_padding: RsaPadding = "pkcs1v15",
    pss_salt_length: int | None = None,
) -> None:
    """Raise InvalidSignature unless `signature` is what `sign_digest_with` would accept."""
    algorithm = HASHES[hash_algorithm]()
    prehashed = utils.Prehashed(algorithm)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
        return
    chosen: padding.AsymmetricPadding = (
        padding.PSS(
            mgf=padding.MGF1(algorithm),
            salt_length=algorithm.digest_size if pss_salt_length is None else pss_salt_length,
        )
        if rsa_padding == "pss"
        else padding.PKCS1v15()
    )
    public_key.verify(signature, digest, chosen, prehashed)
