"""ASGI middleware: request ids and access logs, and the body rules every route shares."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from prometheus_client import Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, DomainError, PayloadTooLarge, UnsupportedMediaType
from app.logs import request_id_var
from app.metrics import REQUEST_LATENCY
from app.routing import error_format

access_log = logging.getLogger("roamsign.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The pages post HTML forms (app/routers/pages): the size limit holds, the JSON rules do not.
PAGE_PREFIXES = ("/me/", "/console/")
# No body of the API nests deeper than a few levels; json.loads recurses once per level and
# raises RecursionError near a thousand, which no parser downstream should ever meet.
MAX_JSON_DEPTH = 64
# A string, or an unterminated one to the end (matching always succeeds: linear time).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")


class RequestContextMiddleware:
    """Binds a request id (the caller's X-Request-Id if sane), logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            _latency(scope["method"], getattr(route, "path", "unmatched")).observe(elapsed)
            access_log.info(
                "http.request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "caller": scope["state"].get("caller_name"),
                },
            )
            request_id_var.reset(token)


# Each (method, route) pair's histogram, as REQUEST_LATENCY.labels() gives it (it takes a lock
# and validates the labels on every call).
_LATENCIES: dict[tuple[str, str], Histogram] = {}


def _latency(method: str, route: str) -> Histogram:
    histogram = _LATENCIES.get((method, route))
    if histogram is None:
        histogram = _LATENCIES[method, route] = REQUEST_LATENCY.labels(method, route)
    return histogram


class UnexpectedErrorMiddleware:
    """Renders an exception no handler took, inside the request context.

    Starlette runs an `Exception` handler in its outermost middleware, after
    RequestContextMiddleware has finished: that 500 would carry no X-Request-Id, and its log line
    no request id. Installed inside RequestContextMiddleware, this one answers with both.
    """

    def __init__(
        self, app: ASGIApp, handler: Callable[[Request, Exception], Awaitable[Response]]
    ) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if started:
                raise  # too late for another answer; the server closes the connection
            response = await self.handler(Request(scope, receive), error)
            await response(scope, receive, send)


class JsonBodyMiddleware:
    """Refuses bodies over the limit (413, before reading them whole), non-JSON ones (415) and
    JSON nested deeper than `MAX_JSON_DEPTH` (400, as bad JSON), for every route at once.

    The body is buffered here, at most `max_bytes`, and replayed to the application.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_problem(
                scope, send, PayloadTooLarge(f"bodies are limited to {self.max_bytes} bytes")
            )
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _send_problem(
                    scope, send, PayloadTooLarge(f"bodies are limited to {self.max_bytes} bytes")
                )
                return
        is_page = scope["path"].startswith(PAGE_PREFIXES)
        content_type = _header(scope, b"content-type")
        if body and not is_page and not _accepted_body(scope["path"], content_type):
            await _send_problem(scope, send, UnsupportedMediaType())
            return
        # Only JSON is parsed as JSON: the PKI protocols' DER bodies may hold any byte.
        if _is_json(content_type) and nests_deeper_than(bytes(body), MAX_JSON_DEPTH):
            detail = f"the request body is not valid JSON: nested deeper than {MAX_JSON_DEPTH}"
            await _send_problem(scope, send, BadRequest(detail))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


# The PKI protocols' own DER bodies, on their endpoints only (RFC 3161 s.3.4, RFC 6960 A.1).
_DER_BODIES = (
    ("/v1/tsa", "application/timestamp-query"),
    ("/v1/ca/ocsp", "application/ocsp-request"),
)


def _accepted_body(path: str, content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if any(path == where and media_type == kind for where, kind in _DER_BODIES):
        return True
    return _is_json(content_type)


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the JSON text `body` opens more than `limit` arrays or objects inside each other
    (brackets inside strings do not count). A body with few brackets costs two counts."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_problem(scope: Scope, send: Send, error: DomainError) -> None:
    # Before routing: the format of the routes mounted over the path (app.routing).
    errors = error_format(scope)
    answer = errors.domain(error)
    body = errors.encode_early(answer)
    headers = [
        (b"content-type", answer.media_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Pages load scripts and styles only from roamsign itself, as files (no inline script or
# style), and are never framed; a token in a page's URL fragment is never sent as a Referer.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeadersMiddleware:
    """Adds the Content-Security-Policy and its companions to every answer (an API answer is
    never rendered, so they cost it nothing and protect a page that is)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(header for header in _SECURITY_HEADERS if header[0] not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
