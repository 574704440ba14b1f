"""Detached CMS and raw signatures over a document hash, checked by us and by openssl."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.crypto.ca import (
    build_issuing_ca,
    build_root_ca,
    certificate_pem,
    issue_signing_certificate,
)
from app.crypto.cms import (
    build_detached_cms,
    signature_algorithm_name,
    verify_cms,
    verify_raw,
)
from app.crypto.keystore import PrivateKey, sign_digest_with
from tests.helpers import openssl_verify

NOW = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
SIGNED_AT = NOW + timedelta(minutes=5)
DOCUMENT = b"Baucar Bayaran PV-2026-000123\n" * 40
HASHES = ("sha256", "sha384", "sha512")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


@dataclass(frozen=True)
class Signer:
    key: PrivateKey
    certificate: x509.Certificate
    issuing: x509.Certificate
    root: x509.Certificate

    @property
    def roots(self) -> list[x509.Certificate]:
        return [self.root]

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return [self.issuing]


def make_signers(name: str) -> dict[str, Signer]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(root_key, name, now=NOW, validity_days=7300)
    issuing = build_issuing_ca(issuing_key, root, root_key, name, now=NOW, validity_days=3650)
    keys: dict[str, PrivateKey] = {
        "ecdsa-p256": ec.generate_private_key(ec.SECP256R1()),
        "rsa-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    return {
        kind: Signer(
            key,
            issue_signing_certificate(
                key.public_key(),
                "Nur Aisyah binti Ahmad",
                "RS-7f3a9c0e",
                issuing,
                issuing_key,
                now=NOW,
                validity_days=730,
            ),
            issuing,
            root,
        )
        for kind, key in keys.items()
    }


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return make_signers("JDN Test")


@pytest.fixture(scope="module")
def strangers() -> dict[str, Signer]:
    return make_signers("Elsewhere")


@pytest.fixture(params=["ecdsa-p256", "rsa-2048"])
def signer(request: pytest.FixtureRequest, signers: dict[str, Signer]) -> Signer:
    return signers[request.param]


def document_digest(hash_algorithm: str, document: bytes = DOCUMENT) -> bytes:
    return hashlib.new(hash_algorithm, document).digest()


def sign_cms(signer: Signer, hash_algorithm: str = "sha256", document: bytes = DOCUMENT) -> bytes:
    return build_detached_cms(
        digest=document_digest(hash_algorithm, document),
        hash_algorithm=hash_algorithm,
        certificate=signer.certificate,
        chain=[signer.issuing, signer.root],
        signing_time=SIGNED_AT,
        sign=lambda digest, name: sign_digest_with(signer.key, digest, name),
    )


def verify(der: bytes, signer: Signer, hash_algorithm: str = "sha256", digest: bytes | None = None):
    return verify_cms(
        der,
        document_digest(hash_algorithm) if digest is None else digest,
        hash_algorithm,
        roots=signer.roots,
        intermediates=signer.intermediates,
    )


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def openssl_cms_verify(tmp_path: Path, signer: Signer, der: bytes, document: bytes):
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "doc.bin").write_bytes(document)
    (tmp_path / "root.pem").write_text(certificate_pem(signer.root))
    (tmp_path / "issuing.pem").write_text(certificate_pem(signer.issuing))
    # Default purpose (S/MIME signing): the leaf has no extended key usage and its key usage
    # allows digitalSignature/nonRepudiation, so `-purpose any` is not needed.
    return openssl_verify(
        tmp_path / "sig.der",
        tmp_path / "doc.bin",
        tmp_path / "root.pem",
        "-certfile",
        str(tmp_path / "issuing.pem"),
        "-attime",
        str(int(SIGNED_AT.timestamp())),
    )


def signer_info(der: bytes) -> cms.SignerInfo:
    signed_data = cms.ContentInfo.load(der)["content"]
    assert len(signed_data["signer_infos"]) == 1
    return signed_data["signer_infos"][0]


def signed_attributes(der: bytes) -> dict[str, list[object]]:
    return {
        attribute["type"].native: attribute["values"].native
        for attribute in signer_info(der)["signed_attrs"]
    }


@needs_openssl
@pytest.mark.parametrize("hash_algorithm", HASHES)
def test_openssl_accepts_the_detached_cms(signer: Signer, hash_algorithm: str, tmp_path: Path):
    result = openssl_cms_verify(tmp_path, signer, sign_cms(signer, hash_algorithm), DOCUMENT)
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


@needs_openssl
def test_openssl_rejects_another_document(signer: Signer, tmp_path: Path):
    result = openssl_cms_verify(tmp_path, signer, sign_cms(signer), DOCUMENT + b"x")
    assert result.returncode != 0


@needs_openssl
def test_openssl_rejects_a_signer_of_another_ca(strangers: dict[str, Signer], tmp_path: Path):
    stranger = strangers["ecdsa-p256"]
    der = sign_cms(stranger)
    ours = make_signers("JDN Test")["ecdsa-p256"]
    assert openssl_cms_verify(tmp_path, ours, der, DOCUMENT).returncode != 0


@needs_openssl
def test_openssl_prints_signing_time_and_signing_certificate_v2(signer: Signer, tmp_path: Path):
    (tmp_path / "sig.der").write_bytes(sign_cms(signer))
    result = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "sig.der"))
    assert result.returncode == 0, result.stderr
    assert "id-smime-aa-signingCertificateV2" in result.stdout
    assert "signingTime" in result.stdout
    assert "UTCTIME:Mar  2 09:35:15 2026 GMT" in result.stdout
    assert "eContent: <ABSENT>" in result.stdout


@needs_openssl
@pytest.mark.parametrize("hash_algorithm", HASHES)
def test_openssl_accepts_the_raw_signature(signer: Signer, hash_algorithm: str, tmp_path: Path):
    digest = document_digest(hash_algorithm)
    (tmp_path / "digest.bin").write_bytes(digest)
    (tmp_path / "sig.bin").write_bytes(sign_digest_with(signer.key, digest, hash_algorithm))
    (tmp_path / "pub.pem").write_bytes(
        signer.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = openssl(
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(tmp_path / "pub.pem"),
        "-in",
        str(tmp_path / "digest.bin"),
        "-sigfile",
        str(tmp_path / "sig.bin"),
        "-pkeyopt",
        f"digest:{hash_algorithm}",
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("hash_algorithm", HASHES)
def test_cms_structure(signer: Signer, hash_algorithm: str):
    der = sign_cms(signer, hash_algorithm)
    content_info = cms.ContentInfo.load(der)
    assert content_info["content_type"].native == "signed_data"
    signed_data = content_info["content"]
    assert signed_data["encap_content_info"]["content_type"].native == "data"
    assert signed_data["encap_content_info"]["content"].native is None
    assert [a["algorithm"].native for a in signed_data["digest_algorithms"]] == [hash_algorithm]
    # A SET OF: DER orders it by encoding, not signer first.
    embedded = {c.chosen.dump() for c in signed_data["certificates"]}
    expected = [signer.certificate, signer.issuing, signer.root]
    assert embedded == {c.public_bytes(serialization.Encoding.DER) for c in expected}
    info = signer_info(der)
    assert info["sid"].name == "issuer_and_serial_number"
    assert info["sid"].chosen["serial_number"].native == signer.certificate.serial_number
    assert info["digest_algorithm"]["algorithm"].native == hash_algorithm
    expected_algorithm = (
        "rsassa_pkcs1v15"
        if isinstance(signer.key, rsa.RSAPrivateKey)
        else f"{hash_algorithm}_ecdsa"
    )
    assert info["signature_algorithm"]["algorithm"].native == expected_algorithm


@pytest.mark.parametrize("hash_algorithm", ["sha256", "sha384", "sha512"])
def test_der_is_what_asn1crypto_assembles_from_the_same_parts(signer: Signer, hash_algorithm: str):
    """build_detached_cms frames the SignedData itself (for speed); asn1crypto building the
    same structure from dicts, with the same signature, must give the same bytes."""
    signatures: list[bytes] = []

    def sign(digest: bytes, name: str) -> bytes:
        signatures.append(sign_digest_with(signer.key, digest, name))
        return signatures[-1]

    digest = document_digest(hash_algorithm)
    der = build_detached_cms(
        digest=digest,
        hash_algorithm=hash_algorithm,
        certificate=signer.certificate,
        chain=[signer.issuing, signer.root],
        signing_time=SIGNED_AT,
        sign=sign,
    )

    certificate = asn1_x509.Certificate.load(
        signer.certificate.public_bytes(serialization.Encoding.DER)
    )
    certificate_id = {
        "cert_hash": hashlib.sha256(certificate.dump()).digest(),
        "issuer_serial": {
            "issuer": [asn1_x509.GeneralName({"directory_name": certificate.issuer})],
            "serial_number": certificate.serial_number,
        },
    }
    attributes = [
        {"type": "content_type", "values": ["data"]},
        {"type": "signing_time", "values": [cms.Time({"utc_time": SIGNED_AT})]},
        {"type": "message_digest", "values": [digest]},
        {"type": "signing_certificate_v2", "values": [{"certs": [certificate_id]}]},
    ]
    rsa_key = isinstance(signer.key, rsa.RSAPrivateKey)
    signer_info = {
        "version": "v1",
        "sid": {
            "issuer_and_serial_number": {
                "issuer": certificate.issuer,
                "serial_number": certificate.serial_number,
            }
        },
        "digest_algorithm": {"algorithm": hash_algorithm, "parameters": None},
        "signed_attrs": attributes,
        "signature_algorithm": {
            "algorithm": "rsassa_pkcs1v15" if rsa_key else f"{hash_algorithm}_ecdsa"
        },
        "signature": signatures[0],
    }
    chain = [signer.certificate, signer.issuing, signer.root]
    expected = cms.ContentInfo(
        {
            "content_type": "signed_data",
            "content": {
                "version": "v1",
                "digest_algorithms": [{"algorithm": hash_algorithm, "parameters": None}],
                "encap_content_info": {"content_type": "data"},
                "certificates": [
                    cms.CertificateChoices(
                        {
                            "certificate": asn1_x509.Certificate.load(
                                c.public_bytes(serialization.Encoding.DER)
                            )
                        }
                    )
                    for c in chain
                ],
                "signer_infos": [signer_info],
            },
        }
    ).dump()

    assert len(signatures) == 1
    assert der == expected


def test_signed_attributes(signer: Signer):
    attributes = signed_attributes(sign_cms(signer))
    assert attributes["content_type"] == ["data"]
    assert attributes["message_digest"] == [document_digest("sha256")]
    assert attributes["signing_time"] == [SIGNED_AT]
    [signing_certificate] = attributes["signing_certificate_v2"]
    assert isinstance(signing_certificate, dict)
    [cert_id] = signing_certificate["certs"]
    certificate_der = signer.certificate.public_bytes(serialization.Encoding.DER)
    assert cert_id["hash_algorithm"]["algorithm"] == "sha256"
    assert cert_id["cert_hash"] == hashlib.sha256(certificate_der).digest()
    assert cert_id["issuer_serial"]["serial_number"] == signer.certificate.serial_number


def test_message_digest_is_the_given_hash_even_for_sha512(signer: Signer):
    digest = document_digest("sha512")
    attributes = signed_attributes(sign_cms(signer, "sha512"))
    assert attributes["message_digest"] == [digest]


def test_sign_callback_gets_the_digest_of_the_signed_attributes(signer: Signer):
    calls: list[tuple[bytes, str]] = []

    def sign(digest: bytes, hash_algorithm: str) -> bytes:
        calls.append((digest, hash_algorithm))
        return sign_digest_with(signer.key, digest, hash_algorithm)

    der = build_detached_cms(
        digest=document_digest("sha384"),
        hash_algorithm="sha384",
        certificate=signer.certificate,
        chain=[],
        signing_time=SIGNED_AT,
        sign=sign,
    )
    signed_attrs = signer_info(der)["signed_attrs"].untag().dump()
    assert calls == [(hashlib.sha384(signed_attrs).digest(), "sha384")]


def test_signing_with_a_key_that_does_not_match_the_certificate_is_refused(
    signer: Signer, strangers: dict[str, Signer]
):
    other_key = strangers[
        "ecdsa-p256" if isinstance(signer.key, ec.EllipticCurvePrivateKey) else "rsa-2048"
    ].key
    with pytest.raises(ValueError, match="does not match"):
        build_detached_cms(
            digest=document_digest("sha256"),
            hash_algorithm="sha256",
            certificate=signer.certificate,
            chain=[],
            signing_time=SIGNED_AT,
            sign=lambda digest, name: sign_digest_with(other_key, digest, name),
        )


@pytest.mark.parametrize(
    ("digest", "hash_algorithm"),
    [(b"\x00" * 31, "sha256"), (b"\x00" * 32, "sha384"), (b"\x00" * 32, "md5")],
)
def test_build_refuses_a_digest_that_does_not_fit(
    signer: Signer, digest: bytes, hash_algorithm: str
):
    with pytest.raises(ValueError):
        build_detached_cms(
            digest=digest,
            hash_algorithm=hash_algorithm,
            certificate=signer.certificate,
            chain=[],
            signing_time=SIGNED_AT,
            sign=lambda d, name: sign_digest_with(signer.key, d, name),
        )


@pytest.mark.parametrize("hash_algorithm", HASHES)
def test_verify_cms_accepts_a_good_signature(signer: Signer, hash_algorithm: str):
    result = verify(sign_cms(signer, hash_algorithm), signer, hash_algorithm)
    assert result.valid, result.reason
    assert result.reason is None
    assert result.signer_certificate == signer.certificate
    assert result.signing_time == SIGNED_AT


def test_verify_cms_rejects_another_digest(signer: Signer):
    result = verify(sign_cms(signer), signer, digest=document_digest("sha256", b"other"))
    assert not result.valid
    assert result.reason == "signature is not over this document hash"


def test_verify_cms_rejects_another_hash_algorithm(signer: Signer):
    der = sign_cms(signer, "sha256")
    result = verify(der, signer, "sha384", digest=document_digest("sha384"))
    assert not result.valid


def test_verify_cms_rejects_a_signer_of_another_ca(signer: Signer, strangers: dict[str, Signer]):
    stranger = strangers["rsa-2048" if isinstance(signer.key, rsa.RSAPrivateKey) else "ecdsa-p256"]
    result = verify(sign_cms(stranger), signer)
    assert not result.valid
    assert result.reason == "certificate does not chain to a trusted CA"


def test_verify_cms_rejects_a_tampered_signature(signer: Signer):
    der = bytearray(sign_cms(signer))
    der[-1] ^= 0x01
    result = verify(bytes(der), signer)
    assert not result.valid
    assert result.reason is not None


def test_verify_cms_rejects_a_tampered_signing_time(signer: Signer):
    der = sign_cms(signer)
    original = SIGNED_AT.strftime("%y%m%d%H%M%SZ").encode()
    forged = (SIGNED_AT + timedelta(hours=1)).strftime("%y%m%d%H%M%SZ").encode()
    assert der.count(original) == 1
    result = verify(der.replace(original, forged), signer)
    assert not result.valid
    assert result.reason == "signature does not verify"


def test_verify_cms_rejects_a_signing_time_outside_the_certificate(signer: Signer):
    der = build_detached_cms(
        digest=document_digest("sha256"),
        hash_algorithm="sha256",
        certificate=signer.certificate,
        chain=[],
        signing_time=NOW + timedelta(days=800),
        sign=lambda d, name: sign_digest_with(signer.key, d, name),
    )
    result = verify(der, signer)
    assert not result.valid
    assert result.reason == "certificate not valid at the signing time"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"\x30\x80", b"not a signature", random.Random(7).randbytes(600)],
)
def test_verify_cms_rejects_garbage_without_raising(signer: Signer, garbage: bytes):
    result = verify(garbage, signer)
    assert not result.valid
    assert result.reason == "malformed CMS structure"


def test_verify_cms_never_raises_on_corrupted_bytes(signer: Signer):
    der = sign_cms(signer)
    rng = random.Random(42)
    for position in rng.sample(range(len(der)), 250):
        corrupted = bytearray(der)
        corrupted[position] ^= 1 << rng.randrange(8)
        verify(bytes(corrupted), signer)
    for length in range(0, len(der), 23):
        assert not verify(der[:length], signer).valid


def test_verify_cms_rejects_every_change_to_the_signer_info(signers: dict[str, Signer]):
    signer = signers["ecdsa-p256"]
    der = sign_cms(signer)
    info = signer_info(der).dump()
    start = der.index(info)
    for position in range(start, len(der)):
        corrupted = bytearray(der)
        corrupted[position] ^= 0x04
        assert not verify(bytes(corrupted), signer).valid, position


def test_verify_cms_rejects_an_attached_signature(signer: Signer):
    content_info = cms.ContentInfo.load(sign_cms(signer))
    content_info["content"]["encap_content_info"] = {"content_type": "data", "content": DOCUMENT}
    result = verify(content_info.dump(force=True), signer)
    assert not result.valid
    assert result.reason == "not a detached signature over data"


@pytest.mark.parametrize("hash_algorithm", HASHES)
def test_verify_raw_accepts_a_good_signature(signer: Signer, hash_algorithm: str):
    digest = document_digest(hash_algorithm)
    signature = sign_digest_with(signer.key, digest, hash_algorithm)
    result = verify_raw(
        signature,
        digest,
        hash_algorithm,
        signer.certificate,
        roots=signer.roots,
        intermediates=signer.intermediates,
        at=SIGNED_AT,
    )
    assert result.valid, result.reason


def test_verify_raw_rejects_bad_signatures(signer: Signer, strangers: dict[str, Signer]):
    digest = document_digest("sha256")
    signature = sign_digest_with(signer.key, digest, "sha256")
    stranger = strangers["rsa-2048" if isinstance(signer.key, rsa.RSAPrivateKey) else "ecdsa-p256"]
    stranger_signature = sign_digest_with(stranger.key, digest, "sha256")
    tampered = bytearray(signature)
    tampered[-1] ^= 0x01

    def check(signature: bytes, digest: bytes, certificate: x509.Certificate, **kwargs):
        return verify_raw(
            signature,
            digest,
            kwargs.get("hash_algorithm", "sha256"),
            certificate,
            roots=signer.roots,
            intermediates=signer.intermediates,
            at=kwargs.get("at"),
        )

    other_digest = document_digest("sha256", b"other")
    assert check(signature, other_digest, signer.certificate).reason == "signature does not verify"
    assert check(stranger_signature, digest, stranger.certificate).reason == (
        "certificate does not chain to a trusted CA"
    )
    assert not check(stranger_signature, digest, signer.certificate).valid
    assert not check(bytes(tampered), digest, signer.certificate).valid
    assert not check(b"", digest, signer.certificate).valid
    assert not check(random.Random(3).randbytes(256), digest, signer.certificate).valid
    assert not check(signature, digest[:-1], signer.certificate).valid
    assert not check(signature, digest, signer.certificate, hash_algorithm="md5").valid
    assert not check(signature, digest, signer.certificate, hash_algorithm="sha384").valid
    late = NOW + timedelta(days=731)
    assert not check(signature, digest, signer.certificate, at=late).valid


def test_signature_algorithm_names(signers: dict[str, Signer]):
    ec_key = signers["ecdsa-p256"].certificate.public_key()
    rsa_key = signers["rsa-2048"].certificate.public_key()
    assert isinstance(ec_key, ec.EllipticCurvePublicKey)
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    assert signature_algorithm_name(ec_key, "sha256") == "ecdsa-with-SHA256"
    assert signature_algorithm_name(ec_key, "sha512") == "ecdsa-with-SHA512"
    assert signature_algorithm_name(rsa_key, "sha256") == "sha256WithRSAEncryption"
    assert signature_algorithm_name(rsa_key, "sha384") == "sha384WithRSAEncryption"
