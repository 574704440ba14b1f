"""Sign a PDF with a roamsign roaming certificate, through the CSC API, with pyHanko.

    set -a; . var/demo.env; set +a          # ROAMSIGN_URL, IGFMAS_KEY, DEMO_MYKAD, ...
    .venv/bin/python examples/sign_pdf.py in.pdf signed.pdf --mykad "$DEMO_MYKAD" \\
        --document-name "Baucar Bayaran PV-2026-000123"

The API key is read from the environment (ROAMSIGN_API_KEY, else the demo's IGFMAS_KEY), never
from the command line. pyHanko computes the hash of the signature's signed attributes; roamsign
e-mails the person an OTP bound to exactly that hash (credentials/sendOTP, our extension), the
person types the OTP and the PIN here, and credentials/authorize returns a single-use SAD that
signatures/signHash spends on the one signature.

Needs the development extras: pyhanko[async-http], pyhanko-certvalidator and aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
from asn1crypto import algos
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.csc_signer import (
    CSCAuthorizationInfo,
    CSCAuthorizationManager,
    CSCCredentialInfo,
    CSCServiceSessionInfo,
    CSCSigner,
    fetch_certs_in_csc_credential,
)
from pyhanko.sign.timestamps import TimeStamper
from pyhanko_certvalidator import ValidationContext

# Called with the base64 hash the OTP was sent for (the e-mail shows its fingerprint).
ReadOtp = Callable[[str], Awaitable[str]]
ReadPin = Callable[[], Awaitable[str]]
TIMEOUT = aiohttp.ClientTimeout(total=30)


class RoamsignOtpAuthorization(CSCAuthorizationManager):
    """Gets one SAD per signature the roamsign way: sendOTP bound to the hash to be signed,
    then authorize with that hash, the OTP the person received and their PIN."""

    def __init__(
        self,
        session_info: CSCServiceSessionInfo,
        credential_info: CSCCredentialInfo,
        http: aiohttp.ClientSession,
        *,
        document_name: str,
        digest_algorithm: str,
        read_otp: ReadOtp,
        read_pin: ReadPin,
    ) -> None:
        super().__init__(session_info, credential_info)
        self.http = http
        self.document_name = document_name
        self.hash_algorithm_oid = algos.DigestAlgorithmId(digest_algorithm).dotted
        self.read_otp = read_otp
        self.read_pin = read_pin
        # pyHanko logs a failed signHash batch and raises a generic error: keep the real cause.
        self.failure: SigningError | None = None

    async def authorize_signature(self, hash_b64s: list[str]) -> CSCAuthorizationInfo:
        if len(hash_b64s) != 1:
            raise SigningError("roamsign authorizes one signature per OTP: use batch_size=1")
        (hash_b64,) = hash_b64s
        await self._post(
            "credentials/sendOTP",
            {
                "credentialID": self.csc_session_info.credential_id,
                "hash": [hash_b64],
                "hashAlgo": self.hash_algorithm_oid,
                "description": self.document_name,
            },
        )
        otp = await self.read_otp(hash_b64)
        pin = await self.read_pin()
        request = self.format_csc_auth_request(pin=pin, otp=otp, hash_b64s=[hash_b64])
        return self.parse_csc_auth_response(await self._post("credentials/authorize", request))

    async def _post(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.csc_session_info.endpoint_url(method)
        async with self.http.post(
            url, json=body, headers=self.auth_headers, timeout=TIMEOUT
        ) as response:
            if response.status >= 400:
                error = await response.json(content_type=None)
                self.failure = SigningError(
                    f"{method}: {error.get('error')}: {error.get('error_description')}"
                )
                raise self.failure
            if response.status == 204:
                return {}
            answer: dict[str, Any] = await response.json()
            return answer


async def find_credential(
    http: aiohttp.ClientSession, service_url: str, api_key: str, mykad: str, api_ver: str = "v1"
) -> str:
    """The person's first roaming credential (credentials/list with userID = MyKad)."""
    async with http.post(
        f"{service_url}/csc/{api_ver}/credentials/list",
        json={"userID": mykad},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=TIMEOUT,
    ) as response:
        answer = await response.json(content_type=None)
        if response.status >= 400:
            raise SigningError(f"credentials/list: {answer.get('error_description')}")
    if not answer["credentialIDs"]:
        raise SigningError("this MyKad has no active roaming credential")
    return str(answer["credentialIDs"][0])


async def sign_pdf(
    pdf: bytes,
    *,
    service_url: str,
    api_key: str,
    document_name: str,
    read_otp: ReadOtp,
    read_pin: ReadPin,
    credential_id: str | None = None,
    mykad: str | None = None,
    api_ver: str = "v1",
    digest_algorithm: str = "sha256",
    prefer_pss: bool = False,
    field_name: str = "Signature1",
    timestamper: TimeStamper | None = None,
    validation_context: ValidationContext | None = None,
) -> bytes:
    """The PDF with one more signature, made by the credential (or the person's first one).

    With `timestamper` (roamsign's TSA: `HTTPTimeStamper(f"{service_url}/v1/tsa")`) the
    signature gets a signature time-stamp (PAdES B-T); with `validation_context` too, the
    OCSP answers and CRLs it fetches from the certificates' pointers and a document
    time-stamp are added (PAdES B-LT and B-LTA). `validation_context` alone: PAdES B-B with
    the validation data of the signing moment, and no time-stamp."""
    async with aiohttp.ClientSession() as http:
        if credential_id is None:
            if mykad is None:
                raise ValueError("give a credential id or a MyKad")
            credential_id = await find_credential(http, service_url, api_key, mykad, api_ver)
        session_info = CSCServiceSessionInfo(
            service_url, credential_id, oauth_token=api_key, api_ver=api_ver
        )
        credential_info = await fetch_certs_in_csc_credential(http, session_info)
        authorization = RoamsignOtpAuthorization(
            session_info,
            credential_info,
            http,
            document_name=document_name,
            digest_algorithm=digest_algorithm,
            read_otp=read_otp,
            read_pin=read_pin,
        )
        signer = CSCSigner(http, authorization, prefer_pss=prefer_pss, batch_size=1)
        long_term = validation_context is not None
        metadata = signers.PdfSignatureMetadata(
            field_name=field_name,
            md_algorithm=digest_algorithm,
            name=document_name,
            subfilter=fields.SigSeedSubFilter.PADES if timestamper or long_term else None,
            embed_validation_info=long_term,
            use_pades_lta=long_term and timestamper is not None,
            validation_context=validation_context,
        )
        writer = IncrementalPdfFileWriter(BytesIO(pdf))
        try:
            pdf_signer = signers.PdfSigner(metadata, signer=signer, timestamper=timestamper)
            output = await pdf_signer.async_sign_pdf(writer)
        except SigningError as error:
            if authorization.failure is not None:
                raise authorization.failure from error
            raise
        return bytes(output.getvalue())


async def _prompt_otp(hash_b64: str) -> str:
    fingerprint = base64.b64decode(hash_b64).hex().upper()
    print(f"An OTP was e-mailed for the hash {fingerprint[:8]}...{fingerprint[-8:]}.")
    return await asyncio.to_thread(input, "OTP: ")


async def _prompt_pin() -> str:
    return await asyncio.to_thread(getpass.getpass, "PIN: ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path, help="the PDF to sign")
    parser.add_argument("output", type=Path, help="where to write the signed PDF")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--mykad", help="sign with this person's roaming credential")
    who.add_argument("--credential-id", help="sign with this CSC credentialID")
    parser.add_argument("--document-name", required=True, help="what the person approves")
    parser.add_argument("--url", default=os.environ.get("ROAMSIGN_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-version", choices=["v1", "v2"], default="v1")
    parser.add_argument("--pss", action="store_true", help="RSASSA-PSS for RSA credentials")
    args = parser.parse_args(argv)
    # The cause of a failed signature is reported below; pyHanko's own log of it is a traceback.
    logging.getLogger("pyhanko.sign.signers.csc_signer").setLevel(logging.CRITICAL)
    api_key = os.environ.get("ROAMSIGN_API_KEY") or os.environ.get("IGFMAS_KEY")
    if not api_key:
        parser.error("set ROAMSIGN_API_KEY (a signer's API key) in the environment")
    try:
        signed = asyncio.run(
            sign_pdf(
                args.input.read_bytes(),
                service_url=args.url.rstrip("/"),
                api_key=api_key,
                document_name=args.document_name,
                read_otp=_prompt_otp,
                read_pin=_prompt_pin,
                credential_id=args.credential_id,
                mykad=args.mykad,
                api_ver=args.api_version,
                prefer_pss=args.pss,
            )
        )
    except (SigningError, aiohttp.ClientError) as error:
        print(f"not signed: {error}", file=sys.stderr)
        return 1
    args.output.write_bytes(signed)
    print(f"signed: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
