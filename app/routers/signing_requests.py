"""The signing flow: request an OTP for one document hash, then submit OTP + PIN once."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.deps import ClockDep, JsonBody, SignerDep, SigningServiceDep
from app.errors import (
    AuthorizationFailed,
    CredentialLocked,
    CredentialNotActive,
    Forbidden,
    NoActiveDevice,
    NoEmailAddress,
    NotFound,
    OtpConsumed,
    OtpExpired,
    OtpPending,
    RateLimited,
    RequestLocked,
    ServiceUnavailable,
    TimestampAuthorityUnavailable,
    Unauthenticated,
)
from app.models import SigningRequest
from app.routing import OneUnitRoute
from app.schemas.problem import BODY_PROBLEMS, problem_responses, response_links
from app.schemas.signing import (
    SignatureOut,
    SignatureSubmit,
    SigningRequestCreate,
    SigningRequestCreated,
    SigningRequestOut,
)
from app.services.signing.service import NewSigningRequest, SignatureResult, SigningService

# The two calls of every signing flow: each route in one unit of work, one thread hop.
router = APIRouter(prefix="/v1/signing-requests", tags=["signing"], route_class=OneUnitRoute)


def own_signing_request(
    request_id: str, caller: SignerDep, signing: SigningServiceDep
) -> SigningRequest:
    """The caller's own request (404 otherwise), before its body is read."""
    return signing.get_own(caller, request_id, with_signer=True)


OwnSigningRequest = Annotated[SigningRequest, Depends(own_signing_request)]
NewRequestBody = Annotated[SigningRequestCreate, Depends(JsonBody(SigningRequestCreate))]
SignatureBody = Annotated[SignatureSubmit, Depends(JsonBody(SignatureSubmit))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SigningRequestCreated,
    responses=problem_responses(
        *BODY_PROBLEMS,
        Unauthenticated,
        Forbidden,
        CredentialNotActive,
        CredentialLocked,
        NoActiveDevice,
        NoEmailAddress,
        OtpPending,
        RateLimited,
        ServiceUnavailable,
    ),
    openapi_extra=response_links(
        201,
        "request_id",
        "/id",
        GetSigningRequest="get_signing_request_v1_signing_requests__request_id__get",
        CancelSigningRequest="cancel_signing_request_v1_signing_requests__request_id__delete",
        SubmitSignature="submit_signature_v1_signing_requests__request_id__signature_post",
    ),
)
def create_signing_request(
    caller: SignerDep, body: NewRequestBody, signing: SigningServiceDep, clock: ClockDep
) -> SigningRequestCreated:
    """Send the person a 6-digit OTP bound to this one document hash, credential and caller.

    The OTP is valid for the configured window (120 s by default) and for three checks. While
    an unexpired OTP for the same person and hash is pending, a new one is refused
    (`otp_pending`). At most 5 OTPs a minute go to one person, whichever systems ask, and a
    signer has its own limit a minute (both configurable): past either, `rate_limited` with
    `Retry-After`.
    """
    created = signing.request_signature(
        caller,
        NewSigningRequest(
            mykad=body.mykad,
            document_hash=body.document_hash,
            hash_algorithm=body.hash_algorithm,
            document_name=body.document_name,
            channel=body.channel,
            signature_format=body.signature_format,
        ),
        clock.now(),
    )
    return SigningRequestCreated(
        id=created.id,
        status="pending",
        channel=created.channel,
        destination=created.destination,
        expires_at=created.expires_at,
        attempts_remaining=signing.attempts_remaining(created),
    )


@router.post(
    "/{request_id}/signature",
    status_code=status.HTTP_201_CREATED,
    response_model=SignatureOut,
    responses=problem_responses(
        *BODY_PROBLEMS,
        Unauthenticated,
        Forbidden,
        NotFound,
        OtpConsumed,
        RequestLocked,
        OtpExpired,
        CredentialNotActive,
        CredentialLocked,
        RateLimited,
        AuthorizationFailed,
        ServiceUnavailable,
        TimestampAuthorityUnavailable,
    ),
)
def submit_signature(
    caller: SignerDep,
    own: OwnSigningRequest,
    body: SignatureBody,
    signing: SigningServiceDep,
    clock: ClockDep,
) -> SignatureOut:
    """Submit the OTP and the PIN; on success, the signature over the stored hash.

    Answers, in this order: `not_found` (not your request), `validation_error` (not counted),
    `otp_consumed`, `request_locked`, `otp_expired` (not counted), `credential_not_active` /
    `credential_locked`, `rate_limited`, then the check itself, which counts one attempt: a
    wrong OTP and a wrong PIN both answer `authorization_failed` with `attempts_remaining`.

    A `cms` signature carries a CAdES signature time-stamp from the time-stamping authority
    (`ROAMSIGN_TSA_URL`, else the built-in one). When that TSA does not answer within
    `ROAMSIGN_TSA_TIMEOUT_SECONDS`, the answer is 503 `tsa_unavailable` with `Retry-After`:
    nothing was signed, no attempt was counted and the OTP is still usable, so send the same
    OTP and PIN again.
    """
    return signature_out(signing.sign_own(caller, own, body.otp, body.pin, clock.now()))


@router.get(
    "/{request_id}",
    response_model=SigningRequestOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def get_signing_request(
    request_id: str, caller: SignerDep, signing: SigningServiceDep, clock: ClockDep
) -> SigningRequestOut:
    """The request's status; once signed, the signature too (a lost 201 loses nothing)."""
    request = signing.get_own(caller, request_id)
    return request_out(signing, request, clock.now())


@router.delete(
    "/{request_id}",
    response_model=SigningRequestOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound, OtpConsumed),
)
def cancel_signing_request(
    request_id: str, caller: SignerDep, signing: SigningServiceDep, clock: ClockDep
) -> SigningRequestOut:
    """Cancel a pending request (the person declined); its OTP can no longer be used."""
    now = clock.now()
    return request_out(signing, signing.cancel(caller, request_id, now), now)


def request_out(
    signing: SigningService, request: SigningRequest, now: datetime
) -> SigningRequestOut:
    result = signing.signature_of(request)
    return SigningRequestOut(
        id=request.id,
        status=signing.effective_status(request, now),
        channel=request.channel,
        destination=request.destination,
        document_name=request.document_name,
        document_hash=request.document_hash,
        hash_algorithm=request.hash_algorithm,
        signature_format=request.signature_format,
        created_at=request.created_at,
        expires_at=request.expires_at,
        attempts_remaining=signing.attempts_remaining(request),
        signature=signature_out(result) if result else None,
    )


def signature_out(result: SignatureResult) -> SignatureOut:
    return SignatureOut(
        request_id=result.request.id,
        signature=base64.b64encode(result.signature.signature).decode(),
        signature_format=result.signature.signature_format,
        signature_algorithm=result.signature.signature_algorithm,
        certificate=result.certificate_pem,
        certificate_chain=list(result.chain_pems),
        signed_at=result.signature.signed_at,
    )
