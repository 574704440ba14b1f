"""OTPs, PINs and API keys: generated from a CSPRNG, kept only as keyed MACs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from app.crypto.keys import MacKey

OTP_DIGITS = 6
API_KEY_PREFIX = "rsk_"


def generate_otp() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


@dataclass(frozen=True)
class OtpBinding:
    """What an OTP authorises: this request, credential, document hash and signer only."""

    request_id: str
    credential_id: str
    hash_algorithm: str
    document_hash: str
    signer_id: str

    def encode(self) -> bytes:
        fields = (
            self.request_id,
            self.credential_id,
            self.hash_algorithm,
            self.document_hash,
            self.signer_id,
        )
        return _length_prefixed(*fields)


def otp_mac(key: MacKey, otp: str, binding: OtpBinding) -> bytes:
    return key.mac(binding.encode() + _length_prefixed(otp))


def pin_mac(pepper: MacKey, credential_id: str, pin: str) -> bytes:
    # A keyed MAC, not a slow password hash: the pepper never leaves the master key (software)
    # or the token (pkcs11), so a stolen database alone gives nothing to brute-force, and the
    # check costs microseconds on every signature.
    return pepper.mac(_length_prefixed(credential_id, pin))


def macs_equal(expected: bytes | None, given: bytes) -> bool:
    if expected is None:
        hmac.compare_digest(given, given)  # the same work either way
        return False
    return hmac.compare_digest(expected, given)


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def keyed_digest(key: MacKey, value: str) -> str:
    return key.mac(value.encode()).hex()


def _length_prefixed(*fields: str) -> bytes:
    out = bytearray()
    for field in fields:
        data = field.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)
