"""Trusted time: the built-in time-stamping authority (RFC 3161) and the stamp each CMS
signature carries (CAdES signature-time-stamp), from it or from the TSA at `tsa_url`."""

from __future__ import annotations

import secrets
from datetime import datetime

import httpx
from asn1crypto import tsp
from cryptography import x509
from sqlalchemy.orm import Session

from app.crypto.cades import SignatureNotStampable, add_vouched_signature_timestamp
from app.crypto.keystore import KeyStore
from app.crypto.tsa import (
    TimestampQuery,
    TimestampQueryRejected,
    reply_to_query,
    timestamp_response,
)
from app.crypto.tsa_client import TimestampUnavailable, request_timestamp
from app.crypto.tsa_token import TimestampTokenInvalid
from app.errors import TimestampAuthorityUnavailable
from app.services.ca import CaCache, ca_key_id
from app.services.trust.material import TSA, TrustCache

# RFC 3161 s.2.4.2: the serial is unique per TSA; 159 random bits need no counter.
_SERIAL_BITS = 159


class TimeStampAuthority:
    """The built-in TSA of `POST /v1/tsa` (and of the signing flow when `tsa_url` is empty)."""

    def __init__(
        self,
        session: Session,
        key_store: KeyStore,
        ca_cache: CaCache,
        cache: TrustCache,
        policy_oid: str,
    ) -> None:
        self.session = session
        self.key_store = key_store
        self.ca_cache = ca_cache
        self.cache = cache
        self.policy_oid = policy_oid

    def reply(self, query_der: bytes, now: datetime) -> bytes:
        """The TimeStampResp for a DER TimeStampReq: granted, or a rejection with its
        failInfo for a query we refuse (malformed, an unsupported hash or policy)."""
        material = self.cache.get(self.session)
        return reply_to_query(
            query_der,
            now=now,
            serial=secrets.randbits(_SERIAL_BITS),
            policy_oid=self.policy_oid,
            tsa_cert=material.tsa,
            chain=self._chain(),
            sign=self._sign,
        )

    def token(self, digest: bytes, hash_algorithm: str, now: datetime) -> bytes:
        """A DER TimeStampToken over `digest`, without HTTP (the in-process stamp)."""
        material = self.cache.get(self.session)
        imprint = tsp.MessageImprint(
            {"hash_algorithm": {"algorithm": hash_algorithm}, "hashed_message": digest}
        )
        query = TimestampQuery(
            hash_algorithm=hash_algorithm,
            hashed_message=digest,
            message_imprint_der=imprint.dump(),
            nonce=None,
            cert_req=True,
            policy=None,
        )
        response = timestamp_response(
            query,
            now=now,
            serial=secrets.randbits(_SERIAL_BITS),
            policy_oid=self.policy_oid,
            tsa_cert=material.tsa,
            chain=self._chain(),
            sign=self._sign,
        )
        return bytes(tsp.TimeStampResp.load(response)["time_stamp_token"].dump())

    def _chain(self) -> list[x509.Certificate]:
        ca = self.ca_cache.get(self.session)
        return [ca.issuing, ca.root]

    def _sign(self, digest: bytes, hash_algorithm: str) -> bytes:
        blob = self.cache.get(self.session).tsa_key_blob
        return self.key_store.sign_digest(ca_key_id(TSA), blob, digest, hash_algorithm)


class SignatureStamper:
    """Adds a signature time-stamp to each CMS signature, from the TSA at `url` (RFC 3161
    over HTTP, within `timeout_seconds`) or, when `url` is empty, the built-in `authority`.

    A TSA that does not give a token in time is `TimestampAuthorityUnavailable` (503): the
    caller's unit of work rolls back, so nothing is signed and the OTP is not spent.
    """

    def __init__(
        self,
        authority: TimeStampAuthority,
        url: str,
        timeout_seconds: float,
        client: httpx.Client | None = None,
    ) -> None:
        self.authority = authority
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.client = client

    def stamp(self, cms_der: bytes, now: datetime) -> bytes:
        def token(digest: bytes) -> bytes:
            if not self.url:
                return self.authority.token(digest, "sha256", now)
            return request_timestamp(
                self.url,
                digest,
                "sha256",
                timeout_seconds=self.timeout_seconds,
                client=self.client,
            )

        try:
            return add_vouched_signature_timestamp(cms_der, token)
        except TimestampUnavailable as error:
            raise TimestampAuthorityUnavailable(
                f"no time-stamp for the signature: {error.reason}; nothing was signed and the "
                "OTP is still usable"
            ) from error
        except (SignatureNotStampable, TimestampTokenInvalid, TimestampQueryRejected) as error:
            raise TimestampAuthorityUnavailable(
                "the time-stamping authority's token is not usable; nothing was signed"
            ) from error
