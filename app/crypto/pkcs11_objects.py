"""The token objects the pkcs11 key store looks up, creates and reads, by label or handle."""

from __future__ import annotations

import secrets
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import PyKCS11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.crypto.keystore import KeyAlgorithm, PrivateKey, PublicKey
from app.crypto.pkcs11_format import (
    P256_PARAMS,
    ec_public_key,
    rsa_public_key,
    secret_key_template,
)
from app.crypto.pkcs11_token import Pkcs11Error

KEK_LABEL = "roamsign-kek"
BLOB_MAC_LABEL = "roamsign-blob-mac"
_SECRET_KEY_GEN = PyKCS11.Mechanism(PyKCS11.CKM_GENERIC_SECRET_KEY_GEN)


class TokenKeyMissing(LookupError):
    """No token object carries this label."""


class TokenKeyExists(ValueError):
    """A token object with this label exists already (and differs from what was asked)."""


@dataclass(frozen=True)
class Kek:
    """A key-encryption key and the MAC key that authenticates the blobs wrapped under it."""

    kek_id: bytes
    wrap: Any
    mac: Any


def find(session: Any, object_class: int, label: str) -> list[Any]:
    return list(
        session.findObjects([(PyKCS11.CKA_CLASS, object_class), (PyKCS11.CKA_LABEL, label)])
    )


def one(session: Any, object_class: int, label: str) -> Any:
    found = find(session, object_class, label)
    if not found:
        raise TokenKeyMissing(f"the token holds no key labelled {label!r}")
    if len(found) > 1:
        raise TokenKeyExists(f"the token holds {len(found)} keys labelled {label!r}")
    return found[0]


def destroy(session: Any, *handles: Any) -> None:
    # A handle may be gone already; a lost session takes its objects with it anyway.
    for handle in handles:
        with suppress(PyKCS11.PyKCS11Error):
            session.destroyObject(handle)


def object_id(session: Any, handle: Any) -> bytes:
    return bytes(session.getAttributeValue(handle, [PyKCS11.CKA_ID], allAsBinary=True)[0])


def load_keks(session: Any) -> dict[bytes, Kek]:
    wraps = {object_id(session, h): h for h in find(session, PyKCS11.CKO_SECRET_KEY, KEK_LABEL)}
    tag_keys = {
        object_id(session, h): h for h in find(session, PyKCS11.CKO_SECRET_KEY, BLOB_MAC_LABEL)
    }
    # A KEK without its MAC key is what a process that died between the two left behind.
    return {
        kek_id: Kek(kek_id, wraps[kek_id], tag_keys[kek_id])
        for kek_id in wraps
        if kek_id in tag_keys
    }


def create_kek(session: Any) -> dict[bytes, Kek]:
    kek_id = secrets.token_bytes(8)
    wrap = session.generateKey(
        [
            (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
            (PyKCS11.CKA_VALUE_LEN, 32),
            (PyKCS11.CKA_TOKEN, True),
            (PyKCS11.CKA_PRIVATE, True),
            (PyKCS11.CKA_SENSITIVE, True),
            (PyKCS11.CKA_EXTRACTABLE, False),
            (PyKCS11.CKA_WRAP, True),
            (PyKCS11.CKA_UNWRAP, True),
            (PyKCS11.CKA_ENCRYPT, False),
            (PyKCS11.CKA_DECRYPT, False),
            (PyKCS11.CKA_LABEL, KEK_LABEL),
            (PyKCS11.CKA_ID, kek_id),
        ],
        PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN),
    )
    mac_template = [
        *secret_key_template(BLOB_MAC_LABEL),
        (PyKCS11.CKA_VALUE_LEN, 32),
        (PyKCS11.CKA_ID, kek_id),
    ]
    mac = session.generateKey(mac_template, _SECRET_KEY_GEN)
    return {kek_id: Kek(kek_id, wrap, mac)}


def read_public_key(session: Any, handle: Any) -> PublicKey:
    key_type = session.getAttributeValue(handle, [PyKCS11.CKA_KEY_TYPE])[0]
    if key_type == PyKCS11.CKK_EC:
        point = session.getAttributeValue(handle, [PyKCS11.CKA_EC_POINT], allAsBinary=True)[0]
        return ec_public_key(bytes(point))
    modulus, exponent = session.getAttributeValue(
        handle, [PyKCS11.CKA_MODULUS, PyKCS11.CKA_PUBLIC_EXPONENT], allAsBinary=True
    )
    return rsa_public_key(bytes(modulus), bytes(exponent))


def private_key_algorithm(session: Any, handle: Any) -> KeyAlgorithm:
    key_type = session.getAttributeValue(handle, [PyKCS11.CKA_KEY_TYPE])[0]
    if key_type == PyKCS11.CKK_EC:
        params = session.getAttributeValue(handle, [PyKCS11.CKA_EC_PARAMS], allAsBinary=True)[0]
        if bytes(params) != P256_PARAMS:
            raise Pkcs11Error(0, "token EC keys must be on P-256")
        return "ecdsa-p256"
    modulus = session.getAttributeValue(handle, [PyKCS11.CKA_MODULUS], allAsBinary=True)[0]
    bits = len(bytes(modulus)) * 8
    if bits not in (2048, 3072):
        raise Pkcs11Error(0, f"token RSA keys must be 2048 or 3072 bits, not {bits}")
    return "rsa-2048" if bits == 2048 else "rsa-3072"


def create_secret_key(session: Any, label: str, value: bytes | None = None) -> Any:
    """A 256-bit HMAC key made in the token, or `value` imported: non-extractable either way."""
    if value is None:
        template = [*secret_key_template(label), (PyKCS11.CKA_VALUE_LEN, 32)]
        return session.generateKey(template, _SECRET_KEY_GEN)
    return session.createObject([*secret_key_template(label), (PyKCS11.CKA_VALUE, value)])


def create_aes_key(session: Any, label: str, value: bytes | None = None) -> Any:
    """An AES-256 token key for AES-GCM (encrypt and decrypt only), made in the token or
    `value` imported: sensitive and non-extractable either way."""
    template = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
        (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
        (PyKCS11.CKA_TOKEN, True),
        (PyKCS11.CKA_PRIVATE, True),
        (PyKCS11.CKA_SENSITIVE, True),
        (PyKCS11.CKA_EXTRACTABLE, False),
        (PyKCS11.CKA_ENCRYPT, True),
        (PyKCS11.CKA_DECRYPT, True),
        (PyKCS11.CKA_WRAP, False),
        (PyKCS11.CKA_UNWRAP, False),
        (PyKCS11.CKA_SIGN, False),
        (PyKCS11.CKA_LABEL, label),
    ]
    if value is None:
        return session.generateKey(
            [*template, (PyKCS11.CKA_VALUE_LEN, 32)], PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN)
        )
    return session.createObject([*template, (PyKCS11.CKA_VALUE, value)])


def private_key_import_template(key: PrivateKey) -> list[tuple[int, Any]]:
    """A session object holding `key`, extractable only so that C_WrapKey can wrap it."""
    common: list[tuple[int, Any]] = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
        (PyKCS11.CKA_TOKEN, False),
        (PyKCS11.CKA_PRIVATE, True),
        (PyKCS11.CKA_SENSITIVE, True),
        (PyKCS11.CKA_EXTRACTABLE, True),
        (PyKCS11.CKA_SIGN, True),
    ]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("EC keys must be on P-256")
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        return [
            *common,
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
            (PyKCS11.CKA_EC_PARAMS, P256_PARAMS),
            (PyKCS11.CKA_VALUE, scalar),
        ]
    numbers = key.private_numbers()
    public = numbers.public_numbers
    fields = (
        (PyKCS11.CKA_MODULUS, public.n),
        (PyKCS11.CKA_PUBLIC_EXPONENT, public.e),
        (PyKCS11.CKA_PRIVATE_EXPONENT, numbers.d),
        (PyKCS11.CKA_PRIME_1, numbers.p),
        (PyKCS11.CKA_PRIME_2, numbers.q),
        (PyKCS11.CKA_EXPONENT_1, numbers.dmp1),
        (PyKCS11.CKA_EXPONENT_2, numbers.dmq1),
        (PyKCS11.CKA_COEFFICIENT, numbers.iqmp),
    )
    return [
        *common,
        (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA),
        *((attribute, _big_endian(value)) for attribute, value in fields),
    ]


def token_key_templates(
    key: PrivateKey, label: str
) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
    """A persistent, non-extractable private key holding `key`, and its public key, both
    labelled `label` (how `keys migrate` moves a CA key into the token)."""
    named = [(PyKCS11.CKA_LABEL, label), (PyKCS11.CKA_ID, label.encode())]
    private = [
        (attribute, value)
        for attribute, value in private_key_import_template(key)
        if attribute not in (PyKCS11.CKA_TOKEN, PyKCS11.CKA_EXTRACTABLE)
    ]
    private += [(PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_EXTRACTABLE, False), *named]
    public: list[tuple[int, Any]] = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY),
        (PyKCS11.CKA_TOKEN, True),
        (PyKCS11.CKA_VERIFY, True),
        *named,
    ]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # CKA_EC_POINT is the point as a DER OCTET STRING (PKCS#11 s.2.3.3).
        public += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
            (PyKCS11.CKA_EC_PARAMS, P256_PARAMS),
            (PyKCS11.CKA_EC_POINT, bytes([0x04, len(point)]) + point),
        ]
    else:
        numbers = key.public_key().public_numbers()
        public += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA),
            (PyKCS11.CKA_MODULUS, _big_endian(numbers.n)),
            (PyKCS11.CKA_PUBLIC_EXPONENT, _big_endian(numbers.e)),
        ]
    return private, public


def _big_endian(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
