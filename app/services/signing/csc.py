"""The Cloud Signature Consortium API (v1.0.4.0 and v2) as a second face of the signing flow.

Nothing here decides who may sign: `credentials/sendOTP` issues the native flow's OTP for one
hash, `credentials/authorize` runs the native ordered check of OTP and PIN and spends the OTP
on a SAD, and `signatures/signHash` spends the SAD on the request's one signature. What this
module adds is the SAD (single use, bound to the request's hash, credential and signer, kept
only as a MAC); the protocol's OIDs are translated in csc_protocol.py, and its input is
decoded at the edge (app.schemas.csc).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keys import Secrets
from app.crypto.secrets import macs_equal
from app.errors import NotFound, ValidationFailed
from app.models import Credential, CredentialStatus, Medium, SigningRequest, User
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller
from app.services.credential_rules import (
    SIGNING_CREDENTIAL,
    binding_of,
    can_sign,
    certificate_of,
    is_expired,
    public_key_of,
    refuse_spent_sad,
)
from app.services.signing.csc_protocol import (
    P256_CURVE,
    check_hash_length,
    hash_algorithm_of,
    key_algorithms,
    signature_mechanism,
)
from app.services.signing.service import NewSigningRequest, SigningService
from app.settings import Settings

_SAD_SEPARATOR = "."


@dataclass(frozen=True)
class CredentialDetails:
    """What `credentials/info` and `credentials/list` describe of one roaming credential."""

    credential: Credential
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA, then root
    key_enabled: bool
    certificate_status: Literal["valid", "expired", "revoked"]
    key_algorithms: tuple[str, ...]
    key_length: int
    curve: str | None


@dataclass(frozen=True)
class SadGrant:
    sad: str
    expires_in_seconds: int


class CscService:
    """The CSC API's use cases, each one delegating the signing rules to `SigningService`."""

    def __init__(
        self,
        session: Session,
        *,
        signing: SigningService,
        ca: CertificateAuthorityService,
        keys: Secrets,
        settings: Settings,
        audit: AuditLog,
    ) -> None:
        self.session = session
        self.signing = signing
        self.ca = ca
        self.keys = keys
        self.settings = settings
        self.audit = audit

    # -- credentials --------------------------------------------------------------------------

    def list_credentials(self, mykad: str, now: datetime) -> list[CredentialDetails]:
        """The roaming credentials a person can sign with (active, or locked by wrong PINs).

        An unknown MyKad and a person without one both give an empty list.
        """
        credentials = self.session.scalars(
            select(Credential)
            .join(User, User.id == Credential.user_id)
            .where(User.mykad == mykad, SIGNING_CREDENTIAL, Credential.certificate_pem.is_not(None))
            .order_by(Credential.created_at, Credential.id)
        )
        return [self._details(credential, now) for credential in credentials]

    def credential_info(self, credential_id: str, now: datetime) -> CredentialDetails:
        return self._details(self._roaming_credential(credential_id), now)

    # -- the signing flow ---------------------------------------------------------------------

    def send_otp(
        self,
        caller: Caller,
        *,
        credential_id: str,
        digest: bytes,
        hash_algorithm: str,
        document_name: str,
        now: datetime,
    ) -> SigningRequest:
        """The native flow's OTP for this one hash, sent to the credential's holder."""
        credential = self._roaming_credential(credential_id)
        user = self.session.get(User, credential.user_id)
        assert user is not None  # foreign key
        return self.signing.request_signature(
            caller,
            NewSigningRequest(
                mykad=user.mykad,
                document_hash=digest.hex(),
                hash_algorithm=hash_algorithm,
                document_name=document_name,
                channel="auto",
                signature_format="raw",
                credential_id=credential.id,
            ),
            now,
        )

    def authorize(
        self,
        caller: Caller,
        *,
        credential_id: str,
        digest: bytes,
        hash_algorithm: str | None,
        otp: str,
        pin: str,
        now: datetime,
    ) -> SadGrant:
        """OTP and PIN, checked as the native signature checks them, exchanged for a SAD."""
        query = select(SigningRequest).where(
            SigningRequest.signer_id == caller.id,
            SigningRequest.credential_id == credential_id,
            SigningRequest.document_hash == digest.hex(),
            SigningRequest.signature_format == "raw",
        )
        if hash_algorithm is not None:
            query = query.where(SigningRequest.hash_algorithm == hash_algorithm)
        # The newest one: it is the pending one if any, else it gives the answer to expect
        # (used, locked, expired) through the same ordered check.
        request = self.session.scalars(
            query.order_by(SigningRequest.created_at.desc(), SigningRequest.id.desc()).limit(1)
        ).first()
        if request is None:
            raise NotFound(
                "no OTP was sent for this credential and hash; call credentials/sendOTP first"
            )
        _credential, user = self.signing.check_otp_and_pin(caller, request, otp, pin, now)
        secret = secrets.token_urlsafe(32)
        ttl = self.settings.csc_sad_ttl_seconds
        self.signing.exchange_otp_for_sad(
            request,
            sad_mac=self._sad_mac(secret, request),
            sad_expires_at=now + timedelta(seconds=ttl),
            now=now,
        )
        self.audit.record(
            now=now,
            action="sad.issued",
            actor=caller.name,
            mykad=user.mykad,
            target_id=request.id,
            details={"credential_id": request.credential_id, "expires_in_seconds": ttl},
        )
        # The request id tells signHash where to look; the secret is what proves the SAD.
        return SadGrant(sad=f"{request.id}{_SAD_SEPARATOR}{secret}", expires_in_seconds=ttl)

    def sign_hash(
        self,
        caller: Caller,
        *,
        credential_id: str,
        sad: str,
        digest: bytes,
        hash_algorithm_oid: str | None,
        sign_algorithm_oid: str,
        sign_algorithm_params_b64: str | None,
        now: datetime,
    ) -> bytes:
        """The one signature a SAD authorizes, over the hash it was issued for."""
        # Who owns the SAD first: another caller's attempt must neither use it nor learn
        # anything about it, and so cannot spend it either.
        request = self._request_of_sad(caller, sad)
        if credential_id != request.credential_id:
            raise ValidationFailed("the SAD was not issued for this credentialID", "/credentialID")
        try:
            check_hash_length(digest, request.hash_algorithm)
        except ValueError as error:
            raise ValidationFailed(str(error), "/hash") from None
        if digest.hex() != request.document_hash:
            raise ValidationFailed("the SAD was not issued for this hash", "/hash")
        refuse_spent_sad(request, now)
        credential = self.session.get(Credential, request.credential_id)
        assert credential is not None
        public_key = public_key_of(certificate_of(credential))
        hash_algorithm, mechanism = signature_mechanism(
            sign_algorithm_oid,
            sign_algorithm_params_b64,
            _hash_algorithm(hash_algorithm_oid) if hash_algorithm_oid else None,
            public_key,
        )
        if hash_algorithm != request.hash_algorithm:
            raise ValidationFailed(
                f"the SAD authorizes a {request.hash_algorithm} hash, not {hash_algorithm}",
                "/hashAlgo",
            )
        result = self.signing.sign_with_sad(caller, request, mechanism, now)
        return result.signature.signature

    # -- the steps ----------------------------------------------------------------------------

    def _roaming_credential(self, credential_id: str) -> Credential:
        credential = self.session.get(Credential, credential_id)
        if (
            credential is None
            or credential.medium != Medium.ROAMING
            or credential.certificate_pem is None
        ):
            raise NotFound("unknown credentialID")
        return credential

    def _details(self, credential: Credential, now: datetime) -> CredentialDetails:
        certificate = certificate_of(credential)
        public_key = public_key_of(certificate)
        material = self.ca.material()
        status: Literal["valid", "expired", "revoked"] = (
            "revoked"
            if credential.status == CredentialStatus.REVOKED
            else ("expired" if is_expired(credential, now) else "valid")
        )
        return CredentialDetails(
            credential=credential,
            certificate=certificate,
            chain=(material.issuing, material.root),
            key_enabled=can_sign(credential, now),
            certificate_status=status,
            key_algorithms=key_algorithms(public_key),
            key_length=public_key.key_size,
            curve=P256_CURVE if isinstance(public_key, ec.EllipticCurvePublicKey) else None,
        )

    def _request_of_sad(self, caller: Caller, sad: str) -> SigningRequest:
        request_id, _, secret = sad.partition(_SAD_SEPARATOR)
        request = self.session.get(SigningRequest, request_id) if secret else None
        if request is None or request.signer_id != caller.id:
            macs_equal(None, bytes(32))  # the same work as a real comparison
            raise NotFound("the SAD is not valid")
        if not macs_equal(request.sad_mac, self._sad_mac(secret, request)):
            raise NotFound("the SAD is not valid")
        return request

    def _sad_mac(self, secret: str, request: SigningRequest) -> bytes:
        # The binding encodes its fields length-prefixed, so the secret appended cannot blur
        # into them.
        return self.keys.sad_mac.mac(binding_of(request).encode() + secret.encode())


def _hash_algorithm(oid: str) -> str:
    try:
        return hash_algorithm_of(oid)
    except ValueError as error:
        raise ValidationFailed(str(error), "/hashAlgo") from None
