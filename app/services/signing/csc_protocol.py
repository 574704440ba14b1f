"""The CSC API's algorithm identifiers: the OIDs of hashes and signature algorithms, and the
signing mechanism a `signAlgo` (with its parameters and `hashAlgo`) asks of a key."""

from __future__ import annotations

import base64
import binascii

from asn1crypto import algos
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.crypto.keystore import PublicKey
from app.errors import ValidationFailed
from app.services.signing.sign import RawMechanism
from app.validation import HASH_LENGTHS

HASH_ALGORITHM_OIDS = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
P256_CURVE = "1.2.840.10045.3.1.7"
ECDSA_WITH = {
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
RSA_WITH = {
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}
# DER NULL: the parameters RFC 4055 gives the PKCS#1 v1.5 algorithms, sent by some clients.
_DER_NULL = b"\x05\x00"


def hash_algorithm_of(oid: str) -> str:
    """The hash algorithm named by a `hashAlgo` OID: SHA-256, SHA-384 or SHA-512."""
    name = HASH_ALGORITHM_OIDS.get(oid.strip())
    if name is None:
        raise ValueError(
            f"hash algorithm {oid} is not supported: SHA-256, SHA-384 or SHA-512 by OID"
        )
    return name


def decode_hash(value: str, algorithm: str | None) -> bytes:
    """A padded standard base64 digest of `algorithm` (or of any SHA-2 size we sign)."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("hash must be base64 (standard, padded)") from None
    check_hash_length(digest, algorithm)
    return digest


def check_hash_length(digest: bytes, algorithm: str | None) -> None:
    sizes = [HASH_LENGTHS[algorithm]] if algorithm else list(HASH_LENGTHS.values())
    if len(digest) not in sizes:
        expected = algorithm or "SHA-256, SHA-384 or SHA-512"
        raise ValueError(f"hash is not a {expected} digest (wrong length)")


def key_algorithms(public_key: PublicKey) -> tuple[str, ...]:
    """The OIDs a credential can sign with: the key's own and every signature algorithm, as
    clients such as pyHanko match the combined ones (ecdsa-with-SHA256...)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return (EC_PUBLIC_KEY, *ECDSA_WITH)
    return (RSA_ENCRYPTION, *RSA_WITH, RSASSA_PSS)


def signature_mechanism(
    sign_algorithm_oid: str,
    params_b64: str | None,
    hash_algorithm: str | None,
    public_key: PublicKey,
) -> tuple[str, RawMechanism]:
    """The hash algorithm and mechanism a `signAlgo` (with `signAlgoParams`, `hashAlgo`) asks
    for, refused unless this key can do exactly that."""
    params = _decode_params(params_b64)
    is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
    if sign_algorithm_oid in ECDSA_WITH or sign_algorithm_oid == EC_PUBLIC_KEY:
        if not is_ec:
            raise ValidationFailed("signAlgo is an ECDSA algorithm; this credential's key is RSA")
        _refuse_params(params, sign_algorithm_oid)
        implied = ECDSA_WITH.get(sign_algorithm_oid)
        return _agreed_hash(implied, hash_algorithm), RawMechanism()
    if sign_algorithm_oid in RSA_WITH or sign_algorithm_oid in (RSA_ENCRYPTION, RSASSA_PSS):
        if is_ec:
            raise ValidationFailed("signAlgo is an RSA algorithm; this credential's key is ECDSA")
        assert isinstance(public_key, rsa.RSAPublicKey)
        if sign_algorithm_oid == RSASSA_PSS:
            return _pss_mechanism(params, hash_algorithm, public_key)
        _refuse_params(params, sign_algorithm_oid)
        implied = RSA_WITH.get(sign_algorithm_oid)
        return _agreed_hash(implied, hash_algorithm), RawMechanism(rsa_padding="pkcs1v15")
    raise ValidationFailed(
        f"signAlgo {sign_algorithm_oid} is not supported; see key/algo in credentials/info",
        "/signAlgo",
    )


def _pss_mechanism(
    params: bytes | None, hash_algorithm: str | None, public_key: rsa.RSAPublicKey
) -> tuple[str, RawMechanism]:
    if params is None:
        raise ValidationFailed(
            "RSASSA-PSS needs signAlgoParams: base64 of the DER RSASSA-PSS-params",
            "/signAlgoParams",
        )
    try:
        parsed = algos.RSASSAPSSParams.load(params, strict=True)
        native = parsed.native
    # asn1crypto parses lazily and raises assorted exception types on malformed input.
    except Exception:
        raise ValidationFailed(
            "signAlgoParams is not a DER RSASSA-PSS-params structure", "/signAlgoParams"
        ) from None
    # RFC 4055 defaults (SHA-1, MGF1 with SHA-1, salt 20) apply to omitted fields: SHA-1 is
    # then refused like any hash we do not sign with.
    pss_hash = native["hash_algorithm"]["algorithm"]
    mask = native["mask_gen_algorithm"]
    if pss_hash not in HASH_LENGTHS:
        raise ValidationFailed(
            f"RSASSA-PSS with {pss_hash} is not supported (sha256, sha384, sha512)",
            "/signAlgoParams",
        )
    if mask["algorithm"] != "mgf1" or mask["parameters"]["algorithm"] != pss_hash:
        raise ValidationFailed(
            "RSASSA-PSS is supported with MGF1 over the same hash only", "/signAlgoParams"
        )
    if native["trailer_field"] != "trailer_field_bc":
        raise ValidationFailed("RSASSA-PSS trailerField must be 1", "/signAlgoParams")
    salt_length = int(native["salt_length"])
    # RFC 8017 s.9.1.1: emLen >= hLen + sLen + 2.
    maximum = (public_key.key_size - 1 + 7) // 8 - HASH_LENGTHS[pss_hash] - 2
    if not 0 <= salt_length <= maximum:
        raise ValidationFailed(
            f"RSASSA-PSS saltLength must be 0 to {maximum} for this key", "/signAlgoParams"
        )
    return _agreed_hash(pss_hash, hash_algorithm), RawMechanism(
        rsa_padding="pss", pss_salt_length=salt_length
    )


def _agreed_hash(implied: str | None, given: str | None) -> str:
    if implied is not None and given is not None and implied != given:
        raise ValidationFailed(f"hashAlgo is {given} but signAlgo implies {implied}", "/hashAlgo")
    chosen = implied or given
    if chosen is None:
        raise ValidationFailed("hashAlgo is required with this signAlgo", "/hashAlgo")
    return chosen


def _refuse_params(params: bytes | None, sign_algorithm_oid: str) -> None:
    if params is not None and params != _DER_NULL:
        raise ValidationFailed(
            f"signAlgo {sign_algorithm_oid} takes no signAlgoParams", "/signAlgoParams"
        )


def _decode_params(params_b64: str | None) -> bytes | None:
    if not params_b64:
        return None
    try:
        return base64.b64decode(params_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("signAlgoParams must be base64", "/signAlgoParams") from None
