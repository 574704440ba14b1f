"""A CAdES B-LT-style signature: the stamped CMS with the validation data of its moment."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from app.crypto.cades import add_validation_data
from app.services.trust.ocsp import OcspResponder
from app.services.trust.publication import PkiPublication


class LongTermEvidence:
    """Adds to a stamped CMS what a verifier needs once the certificate has expired or been
    revoked: the TSA's certificate, the OCSP answers of the signing moment for the signer's
    and the TSA's certificates, and the root's CRL (which covers the issuing CA). The chain
    itself is already in every roamsign CMS."""

    def __init__(self, ocsp_responder: OcspResponder, publication: PkiPublication) -> None:
        self.ocsp = ocsp_responder
        self.publication = publication

    def add(self, cms_der: bytes, signer: x509.Certificate, now: datetime) -> bytes:
        issuing = self.publication.ca.material().issuing
        tsa = self.ocsp.cache.get(self.ocsp.session).tsa
        # Produced at the signing moment, not taken from the cache: a validator may want
        # revocation data no older than the signature.
        responses = [
            self.ocsp.reply(_request(cert, issuing), now, cached=False) for cert in (signer, tsa)
        ]
        return add_validation_data(
            cms_der,
            certificates=[tsa.public_bytes(serialization.Encoding.DER)],
            ocsp_responses=responses,
            crls=[self.publication.root_crl_der(now)],
        )


def _request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    # SHA-1 CertIDs: what most clients send.
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate,
        issuer,
        hashes.SHA1(),  # noqa: S303 - names the issuer, secures nothing
    )
    return builder.build().public_bytes(serialization.Encoding.DER)
