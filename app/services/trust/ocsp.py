"""The OCSP responder (RFC 6960) for every certificate the issuing CA issued: people's, the
TSA's and the responder's own, answered from the credentials table."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keystore import KeyStore
from app.crypto.ocsp import (
    CertStatus,
    OcspRequest,
    OcspRequestMalformed,
    SerialStatus,
    error_response,
    ocsp_response,
    parse_ocsp_request,
)
from app.models import Credential
from app.services.ca import CaCache, ca_key_id
from app.services.trust.material import OCSP, TrustCache

# How long a client may rely on an answer (nextUpdate). A revocation changes the answer at
# once (the cache is keyed by the status); a client that cached a `good` may keep it this long.
OCSP_VALIDITY = timedelta(hours=1)
# A cached answer is handed out while it has at least half its validity left.
_REUSE_FOR = OCSP_VALIDITY / 2
_CACHE_ENTRIES = 50_000


class OcspResponseCache:
    """Signed responses per (CertID, status), for requests without a nonce: RFC 6960 s.2.4
    (and RFC 5019's lightweight profile) let a responder hand out a response produced
    earlier, while it is within thisUpdate..nextUpdate. One per process, bounded."""

    def __init__(self, entries: int = _CACHE_ENTRIES) -> None:
        self._entries = entries
        self._responses: OrderedDict[tuple[object, ...], tuple[bytes, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], now: datetime) -> bytes | None:
        with self._lock:
            found = self._responses.get(key)
            if found is None or now >= found[1]:
                return None
            self._responses.move_to_end(key)
            return found[0]

    def put(self, key: tuple[object, ...], response: bytes, reuse_until: datetime) -> None:
        with self._lock:
            self._responses[key] = (response, reuse_until)
            self._responses.move_to_end(key)
            while len(self._responses) > self._entries:
                self._responses.popitem(last=False)


@functools.lru_cache(maxsize=4096)
def _parsed(request_der: bytes) -> OcspRequest:
    # Clients without a nonce send the same bytes again and again; parsing them with
    # asn1crypto was half the cost of a cached answer. (Refusals raise, and are not cached.)
    return parse_ocsp_request(request_der)


class OcspResponder:
    """Answers `POST /v1/ca/ocsp` and `GET /v1/ca/ocsp/{request}`."""

    def __init__(
        self,
        session: Session,
        key_store: KeyStore,
        ca_cache: CaCache,
        cache: TrustCache,
        responses: OcspResponseCache,
    ) -> None:
        self.session = session
        self.key_store = key_store
        self.ca_cache = ca_cache
        self.cache = cache
        self.responses = responses

    def reply(self, request_der: bytes, now: datetime, *, cached: bool = True) -> bytes:
        """The DER OCSPResponse: good, revoked (time and reason) or unknown per certificate;
        `unauthorized` for another CA's certificate, `malformedRequest` for what cannot be
        read. The nonce, when asked, is echoed (such answers are never cached); `cached`
        False signs a fresh answer (produced `now`) whatever the cache holds."""
        try:
            request = _parsed(request_der)
        except OcspRequestMalformed:
            return error_response("malformed_request")
        statuses = {q.serial_number: self.status(q.serial_number) for q in request.queries}
        key: tuple[object, ...] | None = None
        if request.nonce is None and len(request.queries) == 1:
            query = request.queries[0]
            key = (query.cert_id_der, statuses[query.serial_number])
            found = self.responses.get(key, now) if cached else None
            if found is not None:
                return found
        response = self.respond(request, statuses, now)
        if key is not None:
            self.responses.put(key, response, now + _REUSE_FOR)
        return response

    def respond(
        self, request: OcspRequest, statuses: dict[int, SerialStatus], now: datetime
    ) -> bytes:
        material = self.cache.get(self.session)
        issuing = self.ca_cache.get(self.session).issuing

        def lookup(serial: int) -> tuple[CertStatus, datetime | None, str | None]:
            return statuses.get(serial) or SerialStatus("unknown")

        def sign(digest: bytes, hash_algorithm: str) -> bytes:
            blob = material.ocsp_key_blob
            return self.key_store.sign_digest(ca_key_id(OCSP), blob, digest, hash_algorithm)

        return ocsp_response(
            request, lookup, issuing, material.ocsp, sign, now, now + OCSP_VALIDITY
        )

    def status(self, serial: int) -> SerialStatus:
        """What the CA's records say of a serial it may have issued."""
        material = self.cache.get(self.session)
        if serial in (material.tsa.serial_number, material.ocsp.serial_number):
            return SerialStatus("good")
        row = self.session.execute(
            select(Credential.revoked_at, Credential.revocation_reason).where(
                Credential.certificate_serial == format(serial, "x")
            )
        ).first()
        if row is None:
            return SerialStatus("unknown")
        revoked_at, reason = row
        if revoked_at is not None:
            return SerialStatus("revoked", revoked_at, reason or "unspecified")
        return SerialStatus("good")
