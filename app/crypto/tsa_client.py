"""Asking a remote time-stamping authority for a token (RFC 3161 s.3.4, over HTTP).

One POST of `application/timestamp-query`, bounded in time; every way of not getting a token
that matches the query is one `TimestampUnavailable`, for the signing flow to decide what a
signature without a stamp means.
"""

from __future__ import annotations

import secrets

import httpx
from asn1crypto import cms

from app.crypto.tsa import TimeStampResp, timestamp_query
from app.crypto.tsa_token import TimestampTokenInvalid, read_timestamp_token

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
_GRANTED = ("granted", "granted_with_mods")


class TimestampUnavailable(Exception):
    """No usable token: the TSA timed out, was unreachable, answered an HTTP error, refused
    the query, or sent a token that is not for it. `reason` says which."""

    def __init__(self, reason: str, failure: frozenset[str] = frozenset()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure  # the PKIFailureInfo bits of a rejection


def request_timestamp(
    url: str,
    digest: bytes,
    hash_algorithm: str = "sha256",
    *,
    timeout_seconds: float,
    client: httpx.Client | None = None,
    nonce: int | None = None,
) -> bytes:
    """The DER TimeStampToken a TSA at `url` gives for `digest`.

    `timeout_seconds` bounds each phase of the exchange (connect, send, each read), so a
    TSA that stops answering costs at most a few times that. The token must echo our nonce
    and imprint and carry a valid signature by a time-stamping certificate; trusting that
    TSA is the verifier's decision. Pass `client` to reuse connections.
    """
    nonce = secrets.randbits(63) if nonce is None else nonce
    query = timestamp_query(digest, hash_algorithm, nonce=nonce, cert_req=True)
    try:
        if client is None:
            with httpx.Client() as own_client:
                response = _post(own_client, url, query, timeout_seconds)
        else:
            response = _post(client, url, query, timeout_seconds)
    except httpx.TimeoutException as error:
        raise TimestampUnavailable("the TSA did not answer in time") from error
    except httpx.HTTPError as error:
        raise TimestampUnavailable(f"the TSA is unreachable: {type(error).__name__}") from error
    if response.status_code != 200:
        raise TimestampUnavailable(f"the TSA answered HTTP {response.status_code}")
    return _token_from_reply(response.content, digest, hash_algorithm, nonce)


def _post(client: httpx.Client, url: str, query: bytes, timeout_seconds: float) -> httpx.Response:
    return client.post(
        url,
        content=query,
        headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
        timeout=httpx.Timeout(timeout_seconds),
    )


def _token_from_reply(reply: bytes, digest: bytes, hash_algorithm: str, nonce: int) -> bytes:
    try:
        parsed = TimeStampResp.load(reply, strict=True)
        status = parsed["status"].native
        token = parsed["time_stamp_token"]
    # asn1crypto raises assorted types on malformed input.
    except Exception as error:
        raise TimestampUnavailable("the TSA's reply is not a TimeStampResp") from error
    if status["status"] not in _GRANTED:
        failure = frozenset(status["fail_info"] or ())
        raise TimestampUnavailable(f"the TSA refused: {status['status']}", failure)
    if not isinstance(token, cms.ContentInfo) or token.native is None:
        raise TimestampUnavailable("the TSA granted but sent no token")
    token_der = bytes(token.dump())
    try:
        info = read_timestamp_token(token_der)
    except TimestampTokenInvalid as error:
        raise TimestampUnavailable(f"the TSA's token is invalid: {error}") from error
    if (info.hash_algorithm, info.hashed_message, info.nonce) != (hash_algorithm, digest, nonce):
        raise TimestampUnavailable("the TSA's token is not for this query")
    return token_der
