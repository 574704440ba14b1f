"""Verifying signatures."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ClockDep, SignerDep, VerificationServiceDep
from app.errors import Forbidden, ServiceUnavailable, Unauthenticated
from app.schemas.problem import BODY_PROBLEMS, problem_responses
from app.schemas.signing import SignerOut, TimestampOut, VerificationOut, VerificationRequest

router = APIRouter(prefix="/v1/signatures", tags=["signing"])


@router.post(
    "/verification",
    response_model=VerificationOut,
    responses=problem_responses(*BODY_PROBLEMS, Unauthenticated, Forbidden, ServiceUnavailable),
)
def verify_signature(
    body: VerificationRequest, caller: SignerDep, verifier: VerificationServiceDep, clock: ClockDep
) -> VerificationOut:
    """Check a `cms` or `raw` signature over a document hash.

    `valid` covers the cryptography and the chain to our CA; `certificate_status` says whether
    the signer's certificate is good, revoked or expired now (`unknown` if it is not ours).
    For a `cms` or `cades-lt` signature, `timestamp` gives the signature time-stamp's time and
    TSA, and `certificate_status_at_timestamp` the certificate's status at that time.
    """
    result = verifier.verify(
        document_hash_hex=body.document_hash,
        hash_algorithm=body.hash_algorithm,
        signature_b64=body.signature,
        signature_format=body.signature_format,
        certificate_pem=body.certificate,
        now=clock.now(),
    )
    signer = None
    if result.signer_name is not None and result.certificate_serial is not None:
        signer = SignerOut(
            name=result.signer_name,
            mykad_masked=result.mykad_masked,
            certificate_serial=result.certificate_serial,
        )
    return VerificationOut(
        valid=result.valid,
        signer=signer,
        signed_at=result.signed_at,
        certificate_status=result.certificate_status,
        revoked_at=result.revoked_at,
        reason=result.reason,
        timestamp=TimestampOut(
            time=result.timestamp.time,
            tsa=result.timestamp.tsa,
            tsa_trusted=result.timestamp.tsa_trusted,
        )
        if result.timestamp
        else None,
        certificate_status_at_timestamp=result.certificate_status_at_timestamp,
    )
