"""The CA's public endpoints: the certificate chain and the CRL."""

from __future__ import annotations

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.clock import FrozenClock
from tests.factories import Factory


def pem_certificates(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


async def test_ca_certificates_are_the_chain_issuing_first(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    response = await client.get("/v1/ca/certificates")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/pem-certificate-chain"
    assert response.text.count("-----BEGIN CERTIFICATE-----") == 2
    issuing, root = pem_certificates(response.text)
    assert issuing.issuer == root.subject
    assert root.issuer == root.subject
    assert issuing.subject != root.subject
    issuing.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    for certificate in (issuing, root):
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.value.ca is True


async def test_ca_crl_is_der_signed_by_the_issuing_ca(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    chain = pem_certificates((await client.get("/v1/ca/certificates")).text)
    response = await client.get("/v1/ca/crl")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    issuing_key = chain[0].public_key()
    assert isinstance(issuing_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert crl.is_signature_valid(issuing_key)
    assert crl.issuer == chain[0].subject
    root_key = chain[1].public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert not crl.is_signature_valid(root_key)
    assert crl.last_update_utc <= clock.now()
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > clock.now()
