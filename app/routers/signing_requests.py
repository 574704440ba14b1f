"""The signing flow: request an OTP for one document hash, then submit OTP + PIN once."""

from __future__ import annotations

import base64
from datetime import datetime

from fastapi import APIRouter, Request, status
from fastapi.responses import Response

from app.deps import (
    ClockDep,
    SignerDep,
    SigningServiceDep,
    Unit,
    documented_roles,
    in_one_unit,
    json_body,
    json_response,
)
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
    Unauthenticated,
)
from app.models import Role, SigningRequest
from app.schemas.problem import (
    BODY_PROBLEMS,
    json_request_body,
    problem_responses,
    response_links,
)
from app.schemas.signing import (
    SignatureOut,
    SignatureSubmit,
    SigningRequestCreate,
    SigningRequestCreated,
    SigningRequestOut,
)
from app.services.signing.service import NewSigningRequest, SignatureResult, SigningService

router = APIRouter(prefix="/v1/signing-requests", tags=["signing"])


SIGNERS = frozenset({Role.SIGNER})


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SigningRequestCreated,
    dependencies=[documented_roles(*SIGNERS)],
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
    openapi_extra={
        **json_request_body(SigningRequestCreate),
        **response_links(
            201,
            "request_id",
            "/id",
            GetSigningRequest="get_signing_request_v1_signing_requests__request_id__get",
            CancelSigningRequest="cancel_signing_request_v1_signing_requests__request_id__delete",
            SubmitSignature="submit_signature_v1_signing_requests__request_id__signature_post",
        ),
    },
)
async def create_signing_request(request: Request) -> Response:
    """Send the person a 6-digit OTP bound to this one document hash, credential and caller.

    The OTP is valid for the configured window (120 s by default) and for three checks. While
    an unexpired OTP for the same person and hash is pending, a new one is refused
    (`otp_pending`). At most 5 OTPs a minute go to one person, whichever systems ask, and a
    signer has its own limit a minute (both configurable): past either, `rate_limited` with
    `Retry-After`.
    """
    raw = await request.body()

    def work(unit: Unit) -> SigningRequestCreated:
        # One of the two calls of every flow: one thread hop (app.deps.in_one_unit).
        body = json_body(SigningRequestCreate, raw)
        signing = unit.services.signing
        created = signing.request_signature(
            unit.caller,
            NewSigningRequest(
                mykad=body.mykad,
                document_hash=body.document_hash,
                hash_algorithm=body.hash_algorithm,
                document_name=body.document_name,
                channel=body.channel,
                signature_format=body.signature_format,
            ),
            unit.runtime.clock.now(),
        )
        return SigningRequestCreated(
            id=created.id,
            status="pending",
            channel=created.channel,
            destination=created.destination,
            expires_at=created.expires_at,
            attempts_remaining=signing.attempts_remaining(created),
        )

    return json_response(201, await in_one_unit(request, SIGNERS, work))


@router.post(
    "/{request_id}/signature",
    status_code=status.HTTP_201_CREATED,
    response_model=SignatureOut,
    dependencies=[documented_roles(*SIGNERS)],
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
    ),
    openapi_extra=json_request_body(SignatureSubmit),
)
async def submit_signature(request_id: str, request: Request) -> Response:
    """Submit the OTP and the PIN; on success, the signature over the stored hash.

    Answers, in this order: `not_found` (not your request), `validation_error` (not counted),
    `otp_consumed`, `request_locked`, `otp_expired` (not counted), `credential_not_active` /
    `credential_locked`, `rate_limited`, then the check itself, which counts one attempt: a
    wrong OTP and a wrong PIN both answer `authorization_failed` with `attempts_remaining`.
    """
    raw = await request.body()

    def work(unit: Unit) -> SignatureOut:
        # The other call of every flow, in one thread hop; ownership (404) before the body (422).
        signing = unit.services.signing
        own = signing.get_own(unit.caller, request_id, with_signer=True)
        body = json_body(SignatureSubmit, raw)
        return signature_out(
            signing.sign_own(unit.caller, own, body.otp, body.pin, unit.runtime.clock.now())
        )

    return json_response(201, await in_one_unit(request, SIGNERS, work))


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
