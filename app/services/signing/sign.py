"""Making the signature of a request's hash, once: detached CMS or raw, recorded and told to
the person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from app.crypto.cms import build_detached_cms, signature_algorithm_name
from app.crypto.keys import Secrets
from app.crypto.keystore import KeyStore, PublicKey, RsaPadding
from app.db import Write, after_commit
from app.errors import OtpConsumed
from app.metrics import SIGNATURES
from app.models import Credential, Signature, SigningRequest, User
from app.models.base import new_id
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller
from app.services.credential_rules import certificate_of, public_key_of
from app.services.mail.notices import NoticeContext, signing_notice
from app.services.signing.statements import INSERT_SIGNATURE
from app.services.trust.evidence import LongTermEvidence
from app.services.trust.tsa import SignatureStamper

# Formats whose signature is a detached CMS SignedData (cades-lt: with its validation data).
CMS_FORMATS = frozenset({"cms", "cades-lt"})


@dataclass(frozen=True)
class RawMechanism:
    """How a `raw` signature is made: RSA PKCS#1 v1.5 or PSS (ignored for ECDSA keys).

    `pss_salt_length` None means the digest length, the native API's choice.
    """

    rsa_padding: RsaPadding = "pkcs1v15"
    pss_salt_length: int | None = None


@dataclass(frozen=True)
class SignatureResult:
    request: SigningRequest
    signature: Signature
    certificate_pem: str
    chain_pems: tuple[str, ...]


class SignatureMaker:
    """Signs a request whose OTP or SAD was just spent, and records the one signature."""

    def __init__(
        self,
        session: Session,
        *,
        keys: Secrets,
        key_store: KeyStore,
        ca: CertificateAuthorityService,
        audit: AuditLog,
        notices: NoticeContext,
        stamper: SignatureStamper | None = None,
        evidence: LongTermEvidence | None = None,
    ) -> None:
        self.session = session
        self.keys = keys
        self.key_store = key_store
        self.ca = ca
        self.audit = audit
        self.notices = notices
        # app.units always gives one (every CMS signature carries a time-stamp); None only in
        # tests of other concerns and in bench/ltv.py's unstamped baseline.
        self.stamper = stamper
        self.evidence = evidence

    def sign_once(
        self,
        caller: Caller,
        request: SigningRequest,
        credential: Credential,
        user: User,
        now: datetime,
        mechanism: RawMechanism,
        spend: Write | None = None,
    ) -> SignatureResult:
        """Sign the request's hash and record the signature; the request was just marked
        signed by a conditional update (or is, by `spend`, written with the signature), and
        the unique request_id is the last defence."""
        assert credential.key_blob is not None and credential.certificate_pem is not None
        material = self.ca.material()
        certificate = certificate_of(credential)
        public_key = public_key_of(certificate)
        digest = bytes.fromhex(request.document_hash)
        if request.signature_format in CMS_FORMATS:
            signature_bytes = build_detached_cms(
                digest=digest,
                hash_algorithm=request.hash_algorithm,
                certificate=certificate,
                chain=[material.issuing, material.root],
                signing_time=now,
                sign=lambda data, algorithm: self.key_store.sign_digest(
                    credential.id, credential.key_blob or b"", data, algorithm
                ),
            )
            if self.stamper is not None:
                # Before the signature row: a TSA that does not answer in time refuses (503)
                # and rolls the unit back, so the OTP stays usable.
                signature_bytes = self.stamper.stamp(signature_bytes, now)
            if request.signature_format == "cades-lt":
                if self.evidence is None or self.stamper is None:
                    raise RuntimeError("cades-lt needs the stamper and the evidence")
                signature_bytes = self.evidence.add(signature_bytes, certificate, now)
            algorithm_name = signature_algorithm_name(public_key, request.hash_algorithm)
        else:
            signature_bytes = self.key_store.sign_digest(
                credential.id,
                credential.key_blob,
                digest,
                request.hash_algorithm,
                mechanism.rsa_padding,
                mechanism.pss_salt_length,
            )
            algorithm_name = raw_algorithm_name(public_key, request.hash_algorithm, mechanism)
        values = {
            "id": new_id(),
            "request_id": request.id,
            "signature": signature_bytes,
            "signature_format": request.signature_format,
            "signature_algorithm": algorithm_name,
            "certificate_serial": credential.certificate_serial or "",
            "signed_at": now,
        }
        # No savepoint: a second signature refuses (and rolls back) the whole unit of work.
        writes = [
            *([spend] if spend is not None else []),
            Write(INSERT_SIGNATURE, values, OtpConsumed("this OTP was already used")),
        ]
        signature = Signature(**values)  # what was written, for the answer; never added
        after_commit(self.session, SIGNATURES.labels(request.signature_format).inc)
        # The person learns of every signature made with their key, so misuse is seen.
        notice = signing_notice(self.session, self.notices, user, request, caller.name, now)
        if notice is not None:
            writes.append(notice)
        # The spend, the signature and the notice are written with the event (one statement
        # on PostgreSQL).
        self.audit.record(
            together=writes,
            now=now,
            action="signature.created",
            actor=caller.name,
            mykad=user.mykad,
            target_id=request.id,
            details={
                "certificate_serial": signature.certificate_serial,
                "signature_format": signature.signature_format,
            },
        )
        return SignatureResult(request, signature, credential.certificate_pem, material.chain_pems)


def raw_algorithm_name(public_key: PublicKey, hash_algorithm: str, mechanism: RawMechanism) -> str:
    """The name recorded for a raw signature (RSASSA-PSS is named with its hash)."""
    if isinstance(public_key, rsa.RSAPublicKey) and mechanism.rsa_padding == "pss":
        return f"RSASSA-PSS-{hash_algorithm.upper()}"
    return signature_algorithm_name(public_key, hash_algorithm)
