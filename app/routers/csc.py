"""The Cloud Signature Consortium API, v1.0.4.0 under /csc/v1 and v2 under /csc/v2.

A second face of the signing flow for CSC clients (pyHanko's CSCSigner among them): the same
OTP, the same checks, the same one signature per OTP. Errors are the CSC API's
`{"error", "error_description"}` (its routes are `CscRoute`s: app.schemas.csc.CSC_ERRORS).
"""

from __future__ import annotations

import base64
from typing import Annotated

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, Response, status

from app.deps import ClockDep, ServicesDep, SignerDep
from app.routing import CscRoute
from app.schemas.csc import (
    AuthObject,
    AuthorizeIn,
    AuthorizeOut,
    AuthOut,
    CertificateChoice,
    CertOut,
    CredentialInfoOut,
    CredentialsInfoIn,
    CredentialsListIn,
    CredentialsListOut,
    CscVersion,
    InfoIn,
    InfoOut,
    KeyOut,
    OtpOut,
    PinOut,
    SendOtpIn,
    SignAlgorithms,
    SignHashIn,
    SignHashOut,
    csc_error_responses,
)
from app.services.signing.csc import CredentialDetails, CscService
from app.services.signing.csc_protocol import ECDSA_WITH, RSA_WITH, RSASSA_PSS

# Every path under it is the CSC API's, routed or not (app.main: its errors' format).
PATH_PREFIX = "/csc/"
SPECS: dict[CscVersion, str] = {"v1": "1.0.4.0", "v2": "2.0.0.2"}
METHODS = [
    "credentials/list",
    "credentials/info",
    "credentials/sendOTP",
    "credentials/authorize",
    "signatures/signHash",
]
SERVICE_DESCRIPTION = (
    "roamsign: remote signing with MyGPKI roaming certificates. Call credentials/sendOTP with "
    "the one hash to sign (our extension: hash + hashAlgo + description); the person receives "
    "a 6-digit OTP by e-mail; credentials/authorize with that hash, the OTP and the PIN "
    "returns a single-use SAD for signatures/signHash."
)


async def get_csc_service(services: ServicesDep) -> CscService:
    return services.csc


CscServiceDep = Annotated[CscService, Depends(get_csc_service)]


def versioned_router(version: CscVersion) -> APIRouter:
    """The CSC routes of one API version; both accept the v1 and the v2 spellings."""
    router = APIRouter(
        prefix=f"{PATH_PREFIX}{version}", tags=[f"csc {version}"], route_class=CscRoute
    )

    @router.post(
        "/info",
        response_model=InfoOut,
        response_model_exclude_none=True,
        responses=csc_error_responses(keyed=False),
    )
    def info(body: InfoIn | None = None) -> InfoOut:
        """The service and the methods it offers. Needs no API key (the CSC API's discovery)."""
        algorithms = [*ECDSA_WITH, *RSA_WITH, RSASSA_PSS]
        return InfoOut(
            specs=SPECS[version],
            name="roamsign",
            logo="",
            region="MY",
            lang="en-US",
            description=SERVICE_DESCRIPTION,
            auth_type=["external"],
            methods=METHODS,
            sign_algorithms=SignAlgorithms(algos=algorithms) if version == "v2" else None,
        )

    @router.post(
        "/credentials/list",
        response_model=CredentialsListOut,
        response_model_exclude_none=True,
        responses=csc_error_responses(),
    )
    def list_credentials(
        body: CredentialsListIn, _caller: SignerDep, csc: CscServiceDep, clock: ClockDep
    ) -> CredentialsListOut:
        """The roaming credentials of the person whose MyKad is `userID` (an unknown MyKad
        gives an empty list). v2's `credentialInfo: true` adds each credential's info."""
        found = csc.list_credentials(body.user_id, clock.now())
        if body.max_results is not None:
            found = found[: body.max_results]
        infos = None
        if version == "v2" and body.credential_info:
            infos = [
                csc_credential_out(
                    details,
                    version,
                    certificates=body.certificates,
                    cert_info=body.cert_info,
                    auth_info=body.auth_info,
                    with_id=True,
                )
                for details in found
            ]
        return CredentialsListOut(
            credential_ids=[details.credential.id for details in found], credential_infos=infos
        )

    @router.post(
        "/credentials/info",
        response_model=CredentialInfoOut,
        response_model_exclude_none=True,
        responses=csc_error_responses(),
    )
    def credential_info(
        body: CredentialsInfoIn, _caller: SignerDep, csc: CscServiceDep, clock: ClockDep
    ) -> CredentialInfoOut:
        """The credential's key (status, algorithm OIDs), certificate chain (base64 DER, the
        signer's first), authorization (explicit: OTP and PIN), SCAL 2 and multisign 1."""
        details = csc.credential_info(body.credential_id, clock.now())
        return csc_credential_out(
            details,
            version,
            certificates=body.certificates,
            cert_info=body.cert_info,
            auth_info=body.auth_info,
            with_id=False,
        )

    @router.post(
        "/credentials/sendOTP",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=csc_error_responses(429),
    )
    def send_otp(
        body: SendOtpIn, caller: SignerDep, csc: CscServiceDep, clock: ClockDep
    ) -> Response:
        """E-mail the credential's holder an OTP bound to the one hash to be signed.

        Our extension: `hash` (v2 `hashes`, a list of exactly one base64 hash), `hashAlgo`
        (v2 `hashAlgorithmOID`) and `description`, the document's name the person approves.
        It is the native flow's OTP: the same window, attempts and rules; while one is pending
        for the same person and hash, another is refused, and the same limits a minute per
        person and per signer apply (429 `rate_limited` with `Retry-After`).
        """
        csc.send_otp(
            caller,
            credential_id=body.credential_id,
            digest=body.digest,
            hash_algorithm=body.hash_name or "",
            document_name=body.document_name,
            now=clock.now(),
        )
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/credentials/authorize",
        response_model=AuthorizeOut,
        responses=csc_error_responses(429),
    )
    def authorize(
        body: AuthorizeIn, caller: SignerDep, csc: CscServiceDep, clock: ClockDep
    ) -> AuthorizeOut:
        """Exchange the OTP and the PIN for a SAD bound to the one hash sent with sendOTP.

        The check is the native signature's, in its order, counting one attempt whatever was
        wrong: a wrong OTP and a wrong PIN both answer `invalid_otp`. The SAD is single-use,
        valid for `expiresIn` seconds (at most 60), for this hash, credential and caller only.
        """
        grant = csc.authorize(
            caller,
            credential_id=body.credential_id,
            digest=body.digest,
            hash_algorithm=body.hash_name,
            otp=body.auth_value("OTP") or "",
            pin=body.auth_value("PIN") or "",
            now=clock.now(),
        )
        return AuthorizeOut(sad=grant.sad, expires_in=grant.expires_in_seconds)

    @router.post(
        "/signatures/signHash",
        response_model=SignHashOut,
        responses=csc_error_responses(),
    )
    def sign_hash(
        body: SignHashIn, caller: SignerDep, csc: CscServiceDep, clock: ClockDep
    ) -> SignHashOut:
        """The one signature the SAD authorizes, over its hash: DER ECDSA (ecdsa-with-SHA2),
        RSA PKCS#1 v1.5 (sha*WithRSAEncryption, or rsaEncryption with `hashAlgo`) or
        RSASSA-PSS (`signAlgoParams`: base64 DER RSASSA-PSS-params, MGF1 with the same hash).
        """
        signature = csc.sign_hash(
            caller,
            credential_id=body.credential_id,
            sad=body.sad,
            digest=body.digest,
            hash_algorithm_oid=body.hash_algorithm,
            sign_algorithm_oid=body.sign_algo.strip(),
            sign_algorithm_params_b64=body.sign_algo_params,
            now=clock.now(),
        )
        return SignHashOut(signatures=[base64.b64encode(signature).decode()])

    return router


def csc_credential_out(
    details: CredentialDetails,
    version: CscVersion,
    *,
    certificates: CertificateChoice,
    cert_info: bool,
    auth_info: bool,
    with_id: bool,
) -> CredentialInfoOut:
    certificate = details.certificate
    # The signer's certificate first (the CSC API requires it), then its chain.
    chosen = {
        "none": [],
        "single": [certificate],
        "chain": [certificate, *details.chain],
    }[certificates]
    cert = CertOut(
        status=details.certificate_status,
        certificates=[
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chosen
        ]
        if chosen
        else None,
    )
    if cert_info:
        cert.issuer_dn = certificate.issuer.rfc4514_string()
        cert.serial_number = format(certificate.serial_number, "X")
        cert.subject_dn = certificate.subject.rfc4514_string()
        cert.valid_from = certificate.not_valid_before_utc.strftime("%Y%m%d%H%M%SZ")
        cert.valid_to = certificate.not_valid_after_utc.strftime("%Y%m%d%H%M%SZ")
    out = CredentialInfoOut(
        credential_id=details.credential.id if with_id else None,
        description="MyGPKI roaming signing credential",
        key=KeyOut(
            status="enabled" if details.key_enabled else "disabled",
            algo=list(details.key_algorithms),
            len=details.key_length,
            curve=details.curve,
        ),
        cert=cert,
    )
    if version == "v1":
        out.auth_mode, out.pin, out.otp = "explicit", PinOut(), OtpOut()
    elif auth_info:
        out.auth = AuthOut(
            objects=[
                AuthObject(id="PIN", label="PIN", description=PinOut().description),
                AuthObject(id="OTP", label="OTP", description=OtpOut().description),
            ]
        )
    return out


router = APIRouter()
router.include_router(versioned_router("v1"))
router.include_router(versioned_router("v2"))
