"""The CA's certificates and revocation list: public, no key needed."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.deps import CaServiceDep, ClockDep
from app.errors import ServiceUnavailable
from app.schemas.problem import problem_responses

router = APIRouter(prefix="/v1/ca", tags=["certification authority"])

PEM_CHAIN = "application/pem-certificate-chain"
PKIX_CRL = "application/pkix-crl"


@router.get(
    "/certificates",
    response_class=Response,
    responses={
        200: {"content": {PEM_CHAIN: {}}, "description": "Issuing CA, then root, PEM"},
        **problem_responses(ServiceUnavailable),
    },
)
def certificates(ca: CaServiceDep) -> Response:
    """The chain a verifier needs: the issuing CA, then the root."""
    return Response(ca.chain_pem(), media_type=PEM_CHAIN)


@router.get(
    "/crl",
    response_class=Response,
    responses={
        200: {"content": {PKIX_CRL: {}}, "description": "The issuing CA's CRL, DER"},
        **problem_responses(ServiceUnavailable),
    },
)
def crl(ca: CaServiceDep, clock: ClockDep) -> Response:
    """The issuing CA's certificate revocation list (DER), freshly signed."""
    return Response(ca.crl_der(clock.now()), media_type=PKIX_CRL)
