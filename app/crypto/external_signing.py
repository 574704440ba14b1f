"""Certificates and CRLs signed by a key we cannot hold (a token's CA key).

cryptography's builders sign only with a private key object. So the builder signs with a
throwaway key of the issuer's algorithm, which gives a TBS whose signatureAlgorithm is
right; the token then signs the hash of exactly those TBS bytes, and the final DER is the
TBS, the algorithm and the token's signature, loaded back with cryptography and checked
against the issuer's public key.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from app.crypto.keystore import HASHES, PrivateKey, PublicKey

# (digest, hash algorithm name) -> signature: DER ECDSA or RSA PKCS#1 v1.5, as X.509 wants.
DigestSigner = Callable[[bytes, str], bytes]
_HASHES: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def sign_certificate(
    builder: x509.CertificateBuilder,
    issuer_public_key: PublicKey,
    sign: DigestSigner,
    hash_algorithm: str = "sha256",
) -> x509.Certificate:
    """The certificate `builder` describes, signed by `sign` (the issuer's key)."""
    draft = builder.sign(_stand_in(issuer_public_key), _HASHES[hash_algorithm])
    tbs = draft.tbs_certificate_bytes
    certificate = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs),
            "signature_algorithm": asn1_x509.Certificate.load(_der(draft))["signature_algorithm"],
            "signature_value": sign(_digest(tbs, hash_algorithm), hash_algorithm),
        }
    )
    signed = x509.load_der_x509_certificate(certificate.dump())
    _check(issuer_public_key, signed.signature, signed.tbs_certificate_bytes, hash_algorithm)
    return signed


def sign_crl(
    builder: x509.CertificateRevocationListBuilder,
    issuer_public_key: PublicKey,
    sign: DigestSigner,
    hash_algorithm: str = "sha256",
) -> x509.CertificateRevocationList:
    """The CRL `builder` describes, signed by `sign` (the issuing CA's key)."""
    draft = builder.sign(_stand_in(issuer_public_key), _HASHES[hash_algorithm])
    tbs = draft.tbs_certlist_bytes
    certificate_list = asn1_crl.CertificateList(
        {
            "tbs_cert_list": asn1_crl.TbsCertList.load(tbs),
            "signature_algorithm": asn1_crl.CertificateList.load(_der(draft))[
                "signature_algorithm"
            ],
            "signature": sign(_digest(tbs, hash_algorithm), hash_algorithm),
        }
    )
    signed = x509.load_der_x509_crl(certificate_list.dump())
    _check(issuer_public_key, signed.signature, signed.tbs_certlist_bytes, hash_algorithm)
    return signed


def _der(draft: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return draft.public_bytes(serialization.Encoding.DER)


def _digest(data: bytes, hash_algorithm: str) -> bytes:
    digest = hashes.Hash(HASHES[hash_algorithm]())
    digest.update(data)
    return digest.finalize()


def _stand_in(public_key: PublicKey) -> PrivateKey:
    # ecdsa-with-SHA* and sha*WithRSAEncryption name neither curve nor key size, so one key
    # per family stands in for every issuer of that family.
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _ec_stand_in()
    return _rsa_stand_in()


@lru_cache(maxsize=1)
def _ec_stand_in() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@lru_cache(maxsize=1)
def _rsa_stand_in() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _check(public_key: PublicKey, signature: bytes, tbs: bytes, hash_algorithm: str) -> None:
    # A token key that does not match the issuer certificate would otherwise go out unnoticed.
    algorithm = HASHES[hash_algorithm]()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, tbs, ec.ECDSA(algorithm))
    else:
        public_key.verify(signature, tbs, padding.PKCS1v15(), algorithm)
