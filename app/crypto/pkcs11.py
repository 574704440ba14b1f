"""The pkcs11 key store: no private or secret key ever exists in clear outside the token.

A person's key pair is generated in the token, leaves it only wrapped (CKM_AES_KEY_WRAP_PAD)
under a key-encryption key that cannot leave it, and comes back as a sensitive,
non-extractable session object to sign: the database keeps the wrapped blob, and the number
of token objects does not grow with the number of people. The CA keys and the MAC keys are
token objects, used by label.

Use `Pkcs11KeyStore.from_settings` at start-up; its errors name the setting to fix.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import PyKCS11
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.crypto.keystore import (
    KEY_ALGORITHMS,
    GeneratedKey,
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    RsaPadding,
)
from app.crypto.pkcs11_cache import UnwrappedKeys
from app.crypto.pkcs11_format import (
    KeyBlob,
    KeyBlobRejected,
    algorithm_of,
    finish_signature,
    key_pair_templates,
    signing_input,
    unwrap_template,
    verify_digest,
)
from app.crypto.pkcs11_hmac import HmacCall
from app.crypto.pkcs11_objects import (
    Kek,
    TokenKeyExists,
    TokenKeyMissing,
    create_aes_key,
    create_kek,
    create_secret_key,
    destroy,
    find,
    load_keks,
    one,
    private_key_algorithm,
    private_key_import_template,
    read_public_key,
    token_key_templates,
)
from app.crypto.pkcs11_token import (
    ModuleNotLoadable,
    Pkcs11ConfigurationError,
    Pkcs11Error,
    Token,
    TokenNotFound,
    TokenPinRejected,
    TokenUnavailable,
    read_pin_file,
)
from app.crypto.sealing import SealBroken

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = [
    "KeyBlobRejected",
    "KeyNotExportable",
    "ModuleNotLoadable",
    "Pkcs11ConfigurationError",
    "Pkcs11Error",
    "Pkcs11KeyStore",
    "TokenKeyExists",
    "TokenKeyMissing",
    "TokenNotFound",
    "TokenPinRejected",
    "TokenUnavailable",
]

_WRAP = PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_WRAP_PAD)
_HMAC = PyKCS11.Mechanism(PyKCS11.CKM_SHA256_HMAC)
_PRIVATE = PyKCS11.CKO_PRIVATE_KEY
_SECRET = PyKCS11.CKO_SECRET_KEY
_STALE_HANDLE = frozenset({PyKCS11.CKR_KEY_HANDLE_INVALID, PyKCS11.CKR_OBJECT_HANDLE_INVALID})
_SELF_TEST_DIGEST = hashlib.sha256(b"roamsign pkcs11 self-test").digest()
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
# How a token refuses a GCM tag: SoftHSM2 2.6 says CKR_GENERAL_ERROR (which otherwise means the
# token is gone: decrypt_gcm asks the token which it is), others the 2.40 or 3.0 codes.
_TAG_REFUSED = frozenset(
    {
        PyKCS11.CKR_GENERAL_ERROR,
        PyKCS11.CKR_ENCRYPTED_DATA_INVALID,
        PyKCS11.CKR_ENCRYPTED_DATA_LEN_RANGE,
        PyKCS11.CKR_AEAD_DECRYPT_FAILED,
    }
)
_T = TypeVar("_T")


class KeyNotExportable(TypeError):
    """The pkcs11 store never hands out a private key; sign through it instead."""


class Pkcs11KeyStore:
    """A `KeyStore` whose keys live in a PKCS#11 token (see the module docstring).

    Keeps up to `cache_size` unwrapped keys per process (least recently used first out);
    `forget` drops one at once. Thread-safe; each process logs in once.
    """

    def __init__(self, token: Token, *, cache_size: int = 1024) -> None:
        self._token = token
        self._unwrapped = UnwrappedKeys(cache_size)
        # Token objects by (class, label) and by KEK id: looking a label up costs more than
        # the signature itself.
        self._labelled: dict[tuple[int, str], Any] = {}
        self._algorithms: dict[str, KeyAlgorithm] = {}
        self._keks: dict[bytes, Kek] = {}
        self._wrapping: Kek | None = None
        self._kek_lock = threading.Lock()
        self._hmac_call: HmacCall | None = None
        token.on_reset.append(self._drop_handles)

    @classmethod
    def open(
        cls, module_path: str, label: str, pin: str, *, cache_size: int = 1024, pool_size: int = 8
    ) -> Pkcs11KeyStore:
        token = Token(module_path, label, pin, pool_size=pool_size)
        token.open()
        return cls(token, cache_size=cache_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pkcs11KeyStore:
        return cls.open(
            settings.pkcs11_module,
            settings.pkcs11_token_label,
            read_pin_file(settings.pkcs11_pin_file),
        )

    def close(self) -> None:
        self._token.close()

    # --- people's keys: wrapped blobs ---

    def generate(self, key_id: str, algorithm: KeyAlgorithm) -> GeneratedKey:
        """A key pair made in the token; the blob is its private key wrapped under the KEK."""
        if algorithm not in KEY_ALGORITHMS:
            raise ValueError(f"unsupported key algorithm {algorithm!r}")
        public_template, private_template, mechanism = key_pair_templates(
            algorithm, token=False, extractable=True
        )
        with self._token.session() as session:
            public, private = session.generateKeyPair(public_template, private_template, mechanism)
            try:
                public_key = read_public_key(session, public)
                blob = self._wrap(session, key_id, algorithm, private)
            finally:
                destroy(session, private, public)
        return GeneratedKey(blob=blob, public_key=public_key)

    def import_private_key(self, key_id: str, key: PrivateKey) -> GeneratedKey:
        """Wrap an existing software key under the KEK (the way `keys migrate` moves keys).

        The clear key passes through the token only as a session object, destroyed here.
        """
        algorithm = algorithm_of(key.public_key())
        with self._token.session() as session:
            private = session.createObject(private_key_import_template(key))
            try:
                blob = self._wrap(session, key_id, algorithm, private)
            finally:
                destroy(session, private)
        return GeneratedKey(blob=blob, public_key=key.public_key())

    def private_key(self, key_id: str, blob: bytes) -> PrivateKey:
        raise KeyNotExportable("the pkcs11 key store keeps private keys in the token")

    def sign_digest(
        self,
        key_id: str,
        blob: bytes,
        digest: bytes,
        hash_algorithm: str,
        rsa_padding: RsaPadding = "pkcs1v15",
        pss_salt_length: int | None = None,
    ) -> bytes:
        """Sign a precomputed digest as `keystore.sign_digest_with` would, inside the token."""
        parsed = KeyBlob.decode(blob, key_id)
        mechanism, data = signing_input(
            parsed.algorithm, digest, hash_algorithm, rsa_padding, pss_salt_length
        )
        with self._token.session() as session:
            handle, released = self._unwrapped.get(key_id, blob)
            destroy(session, *released)
            if handle is not None:
                try:
                    return finish_signature(
                        parsed.algorithm, bytes(session.sign(handle, data, mechanism))
                    )
                except PyKCS11.PyKCS11Error as error:
                    # Evicted and destroyed by another thread between our lookup and C_Sign.
                    if error.value not in _STALE_HANDLE:
                        raise
            handle = self._unwrap(session, parsed)
            try:
                raw = bytes(session.sign(handle, data, mechanism))
            finally:
                destroy(session, *self._unwrapped.put(key_id, blob, handle))
        return finish_signature(parsed.algorithm, raw)

    def forget(self, key_id: str) -> None:
        """Destroy this process's unwrapped copy of `key_id` now (revocation, renewal, PIN lock).

        Wiping the key itself is the caller's job: the wrapped blob in the database is its
        only copy, so revocation and renewal overwrite that column in their transaction and
        call this after the commit. Other processes keep their copy until it is evicted, and
        must not sign with it: they check the credential's state before they sign (and a
        renewed blob under the same id replaces a cached key by itself).
        """
        handle = self._unwrapped.pop(key_id)
        if handle is None:
            return
        try:
            with self._token.session() as session:
                destroy(session, handle)
        except TokenUnavailable:
            # The module is initialised again before any further use, which destroys every
            # session object, this one included.
            pass

    @property
    def cached_keys(self) -> int:
        return len(self._unwrapped)

    def cached(self, key_id: str) -> bool:
        """Whether this process holds an unwrapped copy of `key_id` now."""
        return self._unwrapped.peek(key_id) is not None

    def self_test(self) -> None:
        """Generate, wrap, unwrap and sign in the token, and verify the signature here."""
        self._probe()
        generated = self.generate("self-test", "ecdsa-p256")
        parsed = KeyBlob.decode(generated.blob, "self-test")
        mechanism, data = signing_input("ecdsa-p256", _SELF_TEST_DIGEST, "sha256")
        with self._token.session() as session:
            handle = self._unwrap(session, parsed)
            try:
                raw = bytes(session.sign(handle, data, mechanism))
            finally:
                destroy(session, handle)
        verify_digest(
            generated.public_key, finish_signature("ecdsa-p256", raw), _SELF_TEST_DIGEST, "sha256"
        )

    # --- token-resident keys: the CA's private keys, MAC keys ---

    def generate_token_key(self, label: str, algorithm: KeyAlgorithm) -> PublicKey:
        """A persistent, non-extractable key pair labelled `label` (a CA key)."""
        public_template, private_template, mechanism = key_pair_templates(
            algorithm, token=True, label=label, extractable=False
        )
        with self._token.session() as session:
            if find(session, _PRIVATE, label):
                raise TokenKeyExists(f"the token holds a key labelled {label!r} already")
            public, _ = session.generateKeyPair(public_template, private_template, mechanism)
            return read_public_key(session, public)

    def import_token_key(self, label: str, key: PrivateKey) -> PublicKey:
        """Put an existing key into the token as the non-extractable key pair `label` (the way
        `keys migrate` moves a CA key). Idempotent: the same key again is a no-op; a
        different key under that label is refused."""
        public = key.public_key()
        algorithm_of(public)  # refuses what the token store would not sign with
        private_template, public_template = token_key_templates(key, label)
        with self._token.session() as session:
            if find(session, _PRIVATE, label):
                present = read_public_key(session, one(session, PyKCS11.CKO_PUBLIC_KEY, label))
                if present != public:
                    raise TokenKeyExists(f"the token holds another key labelled {label!r}")
                return present
            session.createObject(private_template)
            session.createObject(public_template)
        return public

    def token_public_key(self, label: str) -> PublicKey:
        with self._token.session() as session:
            return read_public_key(session, one(session, PyKCS11.CKO_PUBLIC_KEY, label))

    def sign_with_token_key(
        self,
        label: str,
        digest: bytes,
        hash_algorithm: str,
        rsa_padding: RsaPadding = "pkcs1v15",
        pss_salt_length: int | None = None,
    ) -> bytes:
        """Sign a precomputed digest with the token key `label`; same output as software."""
        with self._token.session() as session:
            algorithm = self._algorithms.get(label)
            if algorithm is None:
                algorithm = private_key_algorithm(session, one(session, _PRIVATE, label))
                self._algorithms[label] = algorithm
            mechanism, data = signing_input(
                algorithm, digest, hash_algorithm, rsa_padding, pss_salt_length
            )
            raw = self._sign_labelled(session, _PRIVATE, label, data, mechanism)
        return finish_signature(algorithm, raw)

    def secret_key(self, label: str) -> None:
        """Create the 256-bit HMAC key `label` in the token unless it exists.

        Call it from one process (start-up, a CLI step): two processes creating the same
        label at the same moment would make two keys, and `mac` refuses to choose.
        """
        with self._token.session() as session:
            if not find(session, _SECRET, label):
                create_secret_key(session, label)

    def import_secret_key(self, label: str, value: bytes) -> None:
        """Put a known HMAC key into the token as `label`, non-extractable from then on.

        Idempotent: importing the same value again is a no-op; another value is refused.
        """
        if len(value) < 16:
            raise ValueError("an HMAC key needs at least 16 bytes")
        probe = b"roamsign import probe"
        with self._token.session() as session:
            if find(session, _SECRET, label):
                ours = hmac.new(value, probe, hashlib.sha256).digest()
                theirs = self._sign_labelled(session, _SECRET, label, probe, _HMAC)
                if hmac.compare_digest(theirs, ours):
                    return
                raise TokenKeyExists(f"the token holds another secret key labelled {label!r}")
            create_secret_key(session, label, value)

    def mac(self, label: str, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` under the token's secret key `label`."""
        if not data:
            raise ValueError("nothing to MAC")  # PyKCS11 refuses empty input to C_Sign
        if self._hmac_call is None:
            self._hmac_call = HmacCall(self._token.module_path)
        hmac_call = self._hmac_call
        with self._token.session() as session:
            return self._use_labelled(
                session, _SECRET, label, lambda handle: hmac_call(session, handle, data)
            )

    # --- token-resident AES keys: AES-256-GCM inside the token (the sealed outbox) ---

    def has_secret_key(self, label: str) -> bool:
        """Whether the token holds a secret key (HMAC or AES) labelled `label`."""
        with self._token.session() as session:
            return bool(find(session, _SECRET, label))

    def aes_key(self, label: str) -> None:
        """Create the AES-256 key `label` in the token unless it exists (one process only,
        as for `secret_key`)."""
        with self._token.session() as session:
            if not find(session, _SECRET, label):
                create_aes_key(session, label)

    def import_aes_key(self, label: str, value: bytes) -> None:
        """Put a known AES-256 key into the token as `label`, non-extractable from then on.

        Idempotent: importing the same value again is a no-op; another value is refused.
        """
        if len(value) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        with self._token.session() as session:
            if find(session, _SECRET, label):
                nonce, probe = os.urandom(GCM_NONCE_BYTES), b"roamsign import probe"
                ours = AESGCM(value).encrypt(nonce, probe, probe)
                if hmac.compare_digest(self._encrypt(session, label, nonce, probe, probe), ours):
                    return
                raise TokenKeyExists(f"the token holds another secret key labelled {label!r}")
            create_aes_key(session, label, value)

    def encrypt_gcm(
        self, label: str, nonce: bytes, plaintext: bytes, associated_data: bytes
    ) -> bytes:
        """AES-GCM under the token key `label`: the ciphertext and its 16-byte tag."""
        if not plaintext or not associated_data:
            # An empty input leaves SoftHSM2's operation active on the pooled session.
            raise ValueError("nothing to encrypt, or no associated data")
        with self._token.session() as session:
            return self._encrypt(session, label, nonce, plaintext, associated_data)

    def decrypt_gcm(
        self, label: str, nonce: bytes, ciphertext: bytes, associated_data: bytes
    ) -> bytes:
        """The plaintext, or `SealBroken` when the tag does not verify (altered, or another
        key or associated data)."""
        if len(ciphertext) <= GCM_TAG_BYTES or not associated_data:
            raise SealBroken("sealed blob too short")
        mechanism = PyKCS11.AES_GCM_Mechanism(nonce, associated_data, GCM_TAG_BYTES * 8)
        with self._token.session() as session:
            try:
                return self._use_labelled(
                    session,
                    _SECRET,
                    label,
                    lambda handle: bytes(session.decrypt(handle, ciphertext, mechanism)),
                )
            except PyKCS11.PyKCS11Error as error:
                if error.value not in _TAG_REFUSED:
                    raise
                # Still there? Then it was the tag (a token gone fails here, as unavailable).
                self._token.token_info_label()
                raise SealBroken("sealed blob does not open with this key and id") from None

    def _encrypt(
        self, session: Any, label: str, nonce: bytes, plaintext: bytes, associated_data: bytes
    ) -> bytes:
        mechanism = PyKCS11.AES_GCM_Mechanism(nonce, associated_data, GCM_TAG_BYTES * 8)
        return self._use_labelled(
            session,
            _SECRET,
            label,
            lambda handle: bytes(session.encrypt(handle, plaintext, mechanism)),
        )

    # --- data keys: AES-256 keys kept wrapped under the KEK, given back to this process ---

    def wrap_data_key(self, purpose: str, value: bytes | None = None) -> bytes:
        """An AES-256 data key for `purpose`, wrapped under the KEK: made in the token, or
        `value` imported. In the token it is only a session object, extractable by C_WrapKey,
        destroyed here; the blob names its purpose and KEK and carries a tag made in the token.
        """
        if value is not None and len(value) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        with self._token.session() as session:
            if value is None:
                template = [*_data_key_template(sensitive=True), (PyKCS11.CKA_VALUE_LEN, 32)]
                key = session.generateKey(template, PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
            else:
                key = session.createObject(
                    [*_data_key_template(sensitive=True), (PyKCS11.CKA_VALUE, value)]
                )
            try:
                kek = self._wrapping_kek(session)
                wrapped = bytes(session.wrapKey(kek.wrap, key, _WRAP))
            finally:
                destroy(session, key)
            authenticated = _data_key_authenticated(purpose, kek.kek_id, wrapped)
            return authenticated + bytes(session.sign(kek.mac, authenticated, _HMAC))

    def unwrap_data_key(self, purpose: str, blob: bytes) -> bytes:
        """The data key wrapped in `blob` for `purpose`, in clear, for this process to use;
        `KeyBlobRejected` if the blob was altered, is another purpose's or another KEK's."""
        kek_id, wrapped, tag = _parse_data_key(purpose, blob)
        authenticated = blob[: -len(tag)]
        with self._token.session() as session:
            kek = self._kek_by_id(session, kek_id)
            if not hmac.compare_digest(bytes(session.sign(kek.mac, authenticated, _HMAC)), tag):
                raise KeyBlobRejected("the data key blob was altered")
            key = session.unwrapKey(kek.wrap, wrapped, _data_key_template(sensitive=False), _WRAP)
            try:
                [value] = session.getAttributeValue(key, [PyKCS11.CKA_VALUE], allAsBinary=True)
            finally:
                destroy(session, key)
        value = bytes(value)
        if len(value) != 32:
            raise KeyBlobRejected("the data key blob holds no AES-256 key")
        return value

    def count_token_objects(self) -> int:
        """Every persistent object this login can see (it must not grow with people)."""
        with self._token.session() as session:
            return len(session.findObjects([(PyKCS11.CKA_TOKEN, True)]))

    # --- internals ---

    def _probe(self) -> None:
        # Reads the token itself: a removed token fails here even while the library still
        # answers from memory.
        with self._token.session():
            self._token.token_info_label()

    def _sign_labelled(
        self, session: Any, object_class: int, label: str, data: bytes, mechanism: Any
    ) -> bytes:
        return self._use_labelled(
            session,
            object_class,
            label,
            lambda handle: bytes(session.sign(handle, data, mechanism)),
        )

    def _use_labelled(
        self, session: Any, object_class: int, label: str, operation: Callable[[Any], _T]
    ) -> _T:
        key = (object_class, label)
        handle = self._labelled.get(key)
        if handle is not None:
            try:
                return operation(handle)
            except PyKCS11.PyKCS11Error as error:
                # Destroyed (and perhaps made again) outside this process: look it up anew.
                if error.value not in _STALE_HANDLE:
                    raise
        try:
            handle = one(session, object_class, label)
        except TokenKeyMissing:
            # A token that went away reads as one without the key: say it is gone (the probe
            # raises TokenUnavailable), and only then that the key is missing.
            self._token.token_info_label()
            raise
        self._labelled[key] = handle
        return operation(handle)

    def _wrap(self, session: Any, key_id: str, algorithm: KeyAlgorithm, private: Any) -> bytes:
        try:
            return self._wrap_under(
                session, self._wrapping_kek(session), key_id, algorithm, private
            )
        except PyKCS11.PyKCS11Error as error:
            if error.value not in _STALE_HANDLE:
                raise
            self._drop_stale_keks()
            return self._wrap_under(
                session, self._wrapping_kek(session), key_id, algorithm, private
            )

    def _wrap_under(
        self, session: Any, kek: Kek, key_id: str, algorithm: KeyAlgorithm, private: Any
    ) -> bytes:
        wrapped = bytes(session.wrapKey(kek.wrap, private, _WRAP))
        blob = KeyBlob(key_id, algorithm, kek.kek_id, wrapped)
        tag = bytes(session.sign(kek.mac, blob.authenticated_part(), _HMAC))
        return replace(blob, tag=tag).encode()

    def _unwrap(self, session: Any, blob: KeyBlob) -> Any:
        try:
            return self._unwrap_under(session, self._kek_by_id(session, blob.kek_id), blob)
        except PyKCS11.PyKCS11Error as error:
            if error.value not in _STALE_HANDLE:
                raise
            self._drop_stale_keks()
            return self._unwrap_under(session, self._kek_by_id(session, blob.kek_id), blob)

    def _drop_stale_keks(self) -> None:
        # A KEK handle went stale: the token went away (the probe raises, and the caller gets
        # TokenUnavailable), or its objects were re-read under us (look them up again).
        self._token.token_info_label()
        with self._kek_lock:
            self._keks.clear()
            self._wrapping = None

    def _unwrap_under(self, session: Any, kek: Kek, blob: KeyBlob) -> Any:
        tag = bytes(session.sign(kek.mac, blob.authenticated_part(), _HMAC))
        if not hmac.compare_digest(tag, blob.tag):
            raise KeyBlobRejected("the key blob was altered")
        return session.unwrapKey(kek.wrap, blob.wrapped, unwrap_template(blob.algorithm), _WRAP)

    def _wrapping_kek(self, session: Any) -> Kek:
        with self._kek_lock:
            if self._wrapping is None:
                keks = load_keks(session) or create_kek(session)
                self._keks.update(keks)
                # Processes that raced to create the first KEK each made one; every blob
                # names its KEK, so all stay usable, and the lowest id is the one new blobs use.
                self._wrapping = keks[min(keks)]
            return self._wrapping

    def _kek_by_id(self, session: Any, kek_id: bytes) -> Kek:
        kek = self._keks.get(kek_id)
        if kek is None:
            keks = load_keks(session)
            with self._kek_lock:
                self._keks.update(keks)
            kek = keks.get(kek_id)
        if kek is None:
            raise KeyBlobRejected("the key blob's key-encryption key is not in this token")
        return kek

    def _drop_handles(self) -> None:
        # The token's session objects died with the sessions; only the references remain.
        self._unwrapped.clear()
        self._labelled.clear()
        self._algorithms.clear()
        with self._kek_lock:
            self._keks.clear()
            self._wrapping = None


# A data key blob: magic, KEK id, purpose, wrapped key (each length-prefixed), then the tag
# over all of it. A person's key blob starts with b"RSK11": no tagged input is both.
_DATA_KEY_MAGIC = b"RSDK1"


def _data_key_authenticated(purpose: str, kek_id: bytes, wrapped: bytes) -> bytes:
    name = purpose.encode()
    return b"".join(
        (
            _DATA_KEY_MAGIC,
            struct.pack(">B", len(kek_id)),
            kek_id,
            struct.pack(">H", len(name)),
            name,
            struct.pack(">H", len(wrapped)),
            wrapped,
        )
    )


def _parse_data_key(purpose: str, blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(KEK id, wrapped key, tag) of a data key blob made for `purpose`; the tag unchecked."""
    try:
        if not blob.startswith(_DATA_KEY_MAGIC):
            raise KeyBlobRejected("not a data key blob")
        offset = len(_DATA_KEY_MAGIC)
        (kek_length,) = struct.unpack_from(">B", blob, offset)
        kek_id = blob[offset + 1 : offset + 1 + kek_length]
        offset += 1 + kek_length
        (name_length,) = struct.unpack_from(">H", blob, offset)
        name = blob[offset + 2 : offset + 2 + name_length].decode()
        offset += 2 + name_length
        (wrapped_length,) = struct.unpack_from(">H", blob, offset)
        wrapped = blob[offset + 2 : offset + 2 + wrapped_length]
        tag = blob[offset + 2 + wrapped_length :]
    except (struct.error, UnicodeDecodeError):
        raise KeyBlobRejected("truncated data key blob") from None
    if len(kek_id) != kek_length or len(wrapped) != wrapped_length or len(tag) != 32:
        raise KeyBlobRejected("truncated data key blob")
    if name != purpose:
        raise KeyBlobRejected("the data key blob belongs to another purpose")
    return kek_id, wrapped, tag


def _data_key_template(*, sensitive: bool) -> list[tuple[int, Any]]:
    """A session AES key that can do nothing in the token: wrapped (sensitive) to be stored,
    or unwrapped (not sensitive) only to be read out into this process."""
    return [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
        (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
        (PyKCS11.CKA_TOKEN, False),
        (PyKCS11.CKA_PRIVATE, True),
        (PyKCS11.CKA_SENSITIVE, sensitive),
        (PyKCS11.CKA_EXTRACTABLE, True),
        (PyKCS11.CKA_ENCRYPT, False),
        (PyKCS11.CKA_DECRYPT, False),
        (PyKCS11.CKA_WRAP, False),
        (PyKCS11.CKA_UNWRAP, False),
        (PyKCS11.CKA_SIGN, False),
        (PyKCS11.CKA_VERIFY, False),
    ]
