"""The Cloud Signature Consortium API (v1.0.4.0 and v2) as a second face of the signing flow.

Nothing here decides who may sign: `credentials/sendOTP` issues the native flow's OTP for one
hash, `credentials/authorize` runs the native ordered check of OTP and PIN and spends the OTP
on a SAD, and `signatures/signHash` spends the SAD on the request's one signature. What this
module adds is the SAD (single use, bound to the request's hash, credential and signer, kept
only as a MAC) and the translation of the protocol's OIDs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from asn1crypto import algos
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keys import DerivedKeys
from app.crypto.keystore import PublicKey
from app.crypto.secrets import OtpBinding, macs_equal
from app.errors import NotFound, OtpConsumed, OtpExpired, ValidationFailed
from app.models import (
    Credential,
    CredentialStatus,
    Medium,
    RequestStatus,
    SigningRequest,
    User,
)
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller
from app.services.signing.service import NewSigningRequest, RawMechanism, SigningService
from app.settings import Settings
from app.validation import HASH_LENGTHS, check_display_text, normalise_mykad

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
        keys: DerivedKeys,
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

    def list_credentials(self, user_id: str, now: datetime) -> list[CredentialDetails]:
        """The roaming credentials a person can sign with (active, or locked by wrong PINs).

        An unknown MyKad and a person without one both give an empty list.
        """
        try:
            mykad = normalise_mykad(user_id)
        except ValueError as error:
            raise ValidationFailed(f"userID: {error}", "/userID") from None
        credentials = self.session.scalars(
            select(Credential)
            .join(User, User.id == Credential.user_id)
            .where(
                User.mykad == mykad,
                Credential.medium == Medium.ROAMING,
                Credential.status.in_([CredentialStatus.ACTIVE, CredentialStatus.LOCKED]),
                Credential.certificate_pem.is_not(None),
            )
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
        hash_b64: str,
        hash_algorithm_oid: str,
        description: str | None,
        now: datetime,
    ) -> SigningRequest:
        """The native flow's OTP for this one hash, sent to the credential's holder."""
        hash_algorithm = _hash_algorithm(hash_algorithm_oid)
        digest = _decode_hash(hash_b64, hash_algorithm)
        if description is None:
            raise ValidationFailed(
                "description is required: the document's name, shown to the person", "/description"
            )
        try:
            document_name = check_display_text(description)
        except ValueError as error:
            raise ValidationFailed(f"description {error}", "/description") from None
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
        hash_b64: str,
        hash_algorithm_oid: str | None,
        num_signatures: int | None,
        otp: str,
        pin: str,
        now: datetime,
    ) -> SadGrant:
        """OTP and PIN, checked as the native signature checks them, exchanged for a SAD."""
        if num_signatures is not None and num_signatures != 1:
            raise ValidationFailed("numSignatures must be 1: one OTP authorizes one signature")
        hash_algorithm = _hash_algorithm(hash_algorithm_oid) if hash_algorithm_oid else None
        digest = _decode_hash(hash_b64, hash_algorithm)
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
        hash_b64: str,
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
        if _decode_hash(hash_b64, request.hash_algorithm).hex() != request.document_hash:
            raise ValidationFailed("the SAD was not issued for this hash", "/hash")
        _refuse_spent_sad(request, now)
        credential = self.session.get(Credential, request.credential_id)
        assert credential is not None and credential.certificate_pem is not None
        public_key = _public_key(credential.certificate_pem)
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
        assert credential.certificate_pem is not None
        certificate = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
        public_key = _public_key(credential.certificate_pem)
        material = self.ca.material()
        expired = certificate.not_valid_after_utc <= now
        status: Literal["valid", "expired", "revoked"] = (
            "revoked"
            if credential.status == CredentialStatus.REVOKED
            else ("expired" if expired else "valid")
        )
        return CredentialDetails(
            credential=credential,
            certificate=certificate,
            chain=(material.issuing, material.root),
            key_enabled=credential.status == CredentialStatus.ACTIVE and not expired,
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
        binding = OtpBinding(
            request_id=request.id,
            credential_id=request.credential_id,
            hash_algorithm=request.hash_algorithm,
            document_hash=request.document_hash,
            signer_id=request.signer_id,
        )
        # The binding encodes its fields length-prefixed, so the secret appended cannot blur
        # into them.
        return hmac.new(
            self.keys.sad_mac, binding.encode() + secret.encode(), hashlib.sha256
        ).digest()


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


def _hash_algorithm(oid: str) -> str:
    name = HASH_ALGORITHM_OIDS.get(oid.strip())
    if name is None:
        raise ValidationFailed(
            f"hash algorithm {oid} is not supported: SHA-256, SHA-384 or SHA-512 by OID",
            "/hashAlgo",
        )
    return name


def _decode_hash(value: str, hash_algorithm: str | None) -> bytes:
    """A padded standard base64 digest of `hash_algorithm` (or of any SHA-2 size we sign)."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("hash must be base64 (standard, padded)", "/hash") from None
    sizes = [HASH_LENGTHS[hash_algorithm]] if hash_algorithm else list(HASH_LENGTHS.values())
    if len(digest) not in sizes:
        expected = hash_algorithm or "SHA-256, SHA-384 or SHA-512"
        raise ValidationFailed(f"hash is not a {expected} digest (wrong length)", "/hash")
    return digest


def _refuse_spent_sad(request: SigningRequest, now: datetime) -> None:
    if request.status == RequestStatus.SIGNED:
        raise OtpConsumed("the SAD was already used")
    if request.status == RequestStatus.CANCELLED:
        raise OtpConsumed("the signing request was cancelled; the SAD is void")
    if request.status != RequestStatus.PENDING or (
        request.sad_expires_at is None or request.sad_expires_at <= now
    ):
        raise OtpExpired("the SAD has expired; authorize again with a new OTP")


def _public_key(certificate_pem: str) -> PublicKey:
    public_key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("roaming certificates carry ECDSA or RSA keys")
    return public_key
