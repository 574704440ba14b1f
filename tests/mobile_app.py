"""A simulated MyGPKI Mobile app: its own P-256 key, real RFC 9421 signatures on httpx requests.

The signatures are made by the `http-message-signatures` library's signer, as a real client
would, so the tests exercise the server against an independent implementation. Every knob a
test needs to break a signature on purpose is a keyword of `sign`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

CODE_LINE = re.compile(r"^Kod / Code: (\d{6})\r?$", re.MULTILINE)
DEFAULT_COMPONENTS = ("@method", "@path")
ELIGIBLE_ANDROID = {"platform": "android", "os_version": "14", "has_sim": True, "model": "Pixel 8"}


def activation_code(text: str) -> str:
    match = CODE_LINE.search(text)
    assert match, "no 'Kod / Code:' line in the e-mail"
    return match.group(1)


class MobileApp:
    """One installation of the app: a device id (once registered) and a private key."""

    def __init__(self, device_id: str | None = None) -> None:
        self.device_id = device_id
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(
        self,
        request: httpx.Request,
        *,
        created: datetime | None = None,
        nonce: str | None = "",
        key_id: str | None = None,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        components: Sequence[str] = DEFAULT_COMPONENTS,
        digest_body: bool = True,
    ) -> httpx.Request:
        """Sign `request` in place: keyid = this device's id, a fresh nonce, created = now,
        and, when it has a body, a Content-Digest covered by the signature."""
        key_id = key_id if key_id is not None else self.device_id
        assert key_id is not None, "register the app first"
        signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ECDSA_P256_SHA256,
            key_resolver=MappingKeyResolver(
                public_keys={}, private_keys={key_id: private_key or self.private_key}
            ),
        )
        body = request.content or None
        signer.sign(
            request,
            key_id=key_id,
            created=created,
            nonce=secrets.token_urlsafe(18) if nonce == "" else nonce,
            covered_component_ids=tuple(components),
            body=body if digest_body else None,
            use_existing_digest="content-digest" in request.headers,
        )
        return request

    def fetch_request(
        self, client: httpx.Client | httpx.AsyncClient, wait: int = 0, **sign: Any
    ) -> httpx.Request:
        params = {"wait": wait} if wait else None
        request = client.build_request(
            "GET", f"/v1/devices/{self.device_id}/messages", params=params
        )
        return self.sign(request, **sign)

    def delete_request(
        self, client: httpx.Client | httpx.AsyncClient, body: bytes | None = None, **sign: Any
    ) -> httpx.Request:
        headers = {"Content-Type": "application/json"} if body else None
        request = client.build_request(
            "DELETE", f"/v1/devices/{self.device_id}", content=body, headers=headers
        )
        return self.sign(request, **sign)


def tampered(request: httpx.Request, body: bytes) -> httpx.Request:
    """The same signed headers with another body (the Content-Digest no longer matches)."""
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx.Request(request.method, request.url, headers=headers, content=body)
