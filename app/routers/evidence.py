"""Public PKI endpoints, no key needed: the time-stamping authority, the OCSP responder, and the
CA certificates and root CRL that relying parties fetch from the certificates' pointers."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from app.deps import ClockDep, ServicesDep
from app.errors import ServiceUnavailable
from app.routing import OneUnitRoute
from app.schemas.problem import problem_responses
from app.services.trust.ocsp import OcspResponder
from app.services.trust.publication import PkiPublication
from app.services.trust.tsa import TimeStampAuthority

# One unit of work on one worker thread a request (app.routing): OCSP is asked far more often
# than anything else here, and the usual route's three thread hops were most of its cost.
router = APIRouter(route_class=OneUnitRoute)

TIMESTAMP_QUERY = "application/timestamp-query"
TIMESTAMP_REPLY = "application/timestamp-reply"
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
PKIX_CERT = "application/pkix-cert"
PKIX_CRL = "application/pkix-crl"


async def raw_body(request: Request) -> bytes:
    return await request.body()


async def get_tsa(services: ServicesDep) -> TimeStampAuthority:
    return services.tsa


async def get_ocsp(services: ServicesDep) -> OcspResponder:
    return services.ocsp


async def get_publication(services: ServicesDep) -> PkiPublication:
    return services.publication


BodyDep = Annotated[bytes, Depends(raw_body)]
TsaDep = Annotated[TimeStampAuthority, Depends(get_tsa)]
OcspDep = Annotated[OcspResponder, Depends(get_ocsp)]
PublicationDep = Annotated[PkiPublication, Depends(get_publication)]


def _der_body(media_type: str, description: str) -> dict[str, Any]:
    return {
        # Not `required`: an empty or unreadable body is answered in the protocol's own shape
        # (a TSA rejection, OCSP malformedRequest) with 200, as RFC 3161 and RFC 6960 ask.
        "requestBody": {
            "required": False,
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def _der_answer(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media_type: {}}, "description": description},
        **problem_responses(ServiceUnavailable),
    }


@router.post(
    "/v1/tsa",
    tags=["evidence"],
    response_class=Response,
    openapi_extra=_der_body(TIMESTAMP_QUERY, "A DER TimeStampReq (RFC 3161 s.2.4.1)"),
    responses=_der_answer(TIMESTAMP_REPLY, "A DER TimeStampResp (RFC 3161 s.2.4.2)"),
)
def timestamp(body: BodyDep, tsa: TsaDep, clock: ClockDep) -> Response:
    """roamsign's time-stamping authority (RFC 3161 over HTTP, s.3.4).

    Answers every query with a TimeStampResp: `granted` with a token signed by the TSA
    certificate (extended key usage timeStamping, critical; sent in the token when the query
    sets certReq), or `rejection` with a failInfo: `badDataFormat` for what is not a DER
    TimeStampReq, `badAlg` for a hash other than SHA-256/384/512, `unacceptedPolicy`,
    `unacceptedExtension`. Send the body as `application/timestamp-query`.
    """
    return Response(tsa.reply(body, clock.now()), media_type=TIMESTAMP_REPLY)


@router.post(
    "/v1/ca/ocsp",
    tags=["certification authority"],
    response_class=Response,
    openapi_extra=_der_body(OCSP_REQUEST, "A DER OCSPRequest (RFC 6960 s.4.1)"),
    responses=_der_answer(OCSP_RESPONSE, "A DER OCSPResponse (RFC 6960 s.4.2)"),
)
def ocsp_post(body: BodyDep, ocsp: OcspDep, clock: ClockDep) -> Response:
    """The OCSP responder for every certificate the issuing CA issued (RFC 6960).

    `good`, `revoked` (with its time and reason) or `unknown` (a serial the CA never issued),
    signed by the delegated responder certificate (OCSPSigning, id-pkix-ocsp-nocheck); a
    request about another CA's certificate answers `unauthorized`, one that cannot be read
    `malformedRequest`. A nonce is echoed; without one, the answer may have been produced up
    to half an hour earlier (it stays valid until its nextUpdate, an hour after thisUpdate).
    """
    return Response(ocsp.reply(body, clock.now()), media_type=OCSP_RESPONSE)


@router.get(
    "/v1/ca/ocsp/{request:path}",
    tags=["certification authority"],
    response_class=Response,
    responses=_der_answer(OCSP_RESPONSE, "A DER OCSPResponse (RFC 6960 s.4.2)"),
)
def ocsp_get(request: str, ocsp: OcspDep, clock: ClockDep) -> Response:
    """The OCSP responder by GET (RFC 6960 A.1): the DER request, base64 then URL-encoded,
    as the last path segment. Answers as the POST does."""
    try:
        der = base64.b64decode(request, validate=True)
    except (binascii.Error, ValueError):
        der = b""  # answered malformedRequest
    return Response(ocsp.reply(der, clock.now()), media_type=OCSP_RESPONSE)


@router.get(
    "/v1/ca/issuer.cer",
    tags=["certification authority"],
    response_class=Response,
    responses=_der_answer(PKIX_CERT, "The issuing CA's certificate, DER"),
)
def issuer_certificate(publication: PublicationDep) -> Response:
    """The issuing CA's certificate as one DER certificate: what each certificate's authority
    information access (caIssuers) names, as RFC 5280 s.4.2.2.1 asks. The PEM chain stays at
    `/v1/ca/certificates`."""
    return Response(publication.issuer_der(), media_type=PKIX_CERT)


@router.get(
    "/v1/ca/root.cer",
    tags=["certification authority"],
    response_class=Response,
    responses=_der_answer(PKIX_CERT, "The root's certificate, DER"),
)
def root_certificate(publication: PublicationDep) -> Response:
    """The root's certificate, DER: the issuing CA certificate's caIssuers."""
    return Response(publication.root_der(), media_type=PKIX_CERT)


@router.get(
    "/v1/ca/root.crl",
    tags=["certification authority"],
    response_class=Response,
    responses=_der_answer(PKIX_CRL, "The root's CRL, DER"),
)
def root_crl(publication: PublicationDep, clock: ClockDep) -> Response:
    """The root's certificate revocation list (DER), freshly signed: the issuing CA
    certificate's CRL distribution point, for validators that want revocation data for every
    certificate below the root."""
    return Response(publication.root_crl_der(clock.now()), media_type=PKIX_CRL)
