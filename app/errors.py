"""Expected failures (DomainError), and how they are written: RFC 9457 problems (`PROBLEMS`) or
another API's shape (the same `ErrorFormat`, e.g. app.schemas.csc.CSC_ERRORS)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://roamsign.example/problems/"


class ConfigurationError(RuntimeError):
    """The service cannot start as configured (missing master key, placeholder secret...)."""


class DomainError(Exception):
    """An expected failure, rendered in the wire format of the route that raised it.

    Raising one rolls the unit of work back, unless the service called `app.db.keep_changes`
    first (a counted attempt, a PIN failure, a lockout must survive the refusal).
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)

    @property
    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(DomainError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthenticated(DomainError):
    status, code, title = 401, "unauthenticated", "Authentication required"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="roamsign"'}


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed for this caller"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class PayloadTooLarge(DomainError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "unsupported_media_type", "Request body must be application/json"


class ValidationFailed(DomainError):
    """Input that parses but breaks a rule; `errors` carries JSON pointers to the fields."""

    status, code, title = 422, "validation_error", "Invalid request"

    def __init__(self, detail: str, pointer: str = "") -> None:
        super().__init__(detail, errors=[{"pointer": pointer, "detail": detail}])


class AuthorizationFailed(DomainError):
    """Wrong OTP or wrong PIN: deliberately the same answer for both."""

    status, code, title = 403, "authorization_failed", "OTP or PIN not accepted"


class OtpExpired(DomainError):
    status, code, title = 410, "otp_expired", "The OTP has expired; request a new one"


class OtpConsumed(DomainError):
    status, code, title = 409, "otp_consumed", "The OTP was already used or the request cancelled"


class OtpPending(DomainError):
    status, code, title = 409, "otp_pending", "An OTP for this document is still pending"


class RequestLocked(DomainError):
    status, code, title = 423, "request_locked", "Too many failed attempts for this request"


class CredentialNotActive(DomainError):
    status, code, title = 409, "credential_not_active", "No active roaming credential"


class CredentialLocked(DomainError):
    status, code, title = 423, "credential_locked", "The credential is locked"


class NoActiveDevice(DomainError):
    status, code, title = 409, "no_active_device", "The person has no active mobile device"


class NoEmailAddress(DomainError):
    status, code, title = 409, "no_email_address", "The person has no registered e-mail address"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflicts with the current state"


class DeviceNotEligible(DomainError):
    status, code, title = 422, "device_not_eligible", "Device not eligible"


class PhoneMismatch(DomainError):
    status, code, title = 422, "phone_mismatch", "Phone number does not match"


class RateLimited(DomainError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = max(1, retry_after_seconds)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class ServiceUnavailable(DomainError):
    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"


class TimestampAuthorityUnavailable(ServiceUnavailable):
    """The time-stamping authority did not give a token in time: nothing was signed and the
    OTP (or SAD) was not spent, so the same call can be retried."""

    code, title = "tsa_unavailable", "The time-stamping authority is unavailable"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class InternalError(DomainError):
    status, code, title = 500, "internal_error", "Internal error"


# One-time tokens sent by e-mail (address verification, PIN setup and reset) are one-time
# secrets like the OTP, so they answer with the contract's codes: a token that matches nothing
# is invalid input, one past its validity has expired, one used or replaced is consumed. The
# refusal is recorded in the audit trail, so the service keeps its changes
# (`app.db.keep_changes`; the refusal changes nothing else: it is raised before any change).


class TokenNotValid(ValidationFailed):
    """The token matches nothing issued for this purpose and subject."""

    title = "The token is not valid"

    def __init__(self, detail: str = "the token is not valid for this request") -> None:
        super().__init__(detail, "/token")


class TokenExpired(DomainError):
    status, code, title = 410, "otp_expired", "The token has expired; ask for a new one"


class TokenConsumed(DomainError):
    status, code, title = 409, "otp_consumed", "The token was already used or replaced"


# --- MyGPKI Mobile: the device calls answer with the contract's codes. An activation code is a
# one-time secret like the OTP (a wrong one is counted, three are the limit); registration
# refusals are counted against its rate limits, and every refusal is audited, so the service
# keeps its changes (`app.db.keep_changes`; nothing else has changed when they are raised).


class ActivationCodeRejected(AuthorizationFailed):
    title = "Activation code not accepted"


class ActivationLocked(RequestLocked):
    title = "Too many wrong activation codes; register the device again"


class ActivationCodeExpired(OtpExpired):
    title = "The activation code has expired; register the device again"


class ActivationCodeConsumed(OtpConsumed):
    title = "The activation code was already used or replaced"


class UnregisteredPhone(PhoneMismatch):
    """Not the person's registered number, or no such person: deliberately one answer."""


class SignatureRejected(Unauthenticated):
    """A device request without a valid RFC 9421 signature (devices hold no bearer secret)."""

    title = "Device signature not accepted"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Signature realm="roamsign", alg="ecdsa-p256-sha256"'}


ALL_ERRORS: tuple[type[DomainError], ...] = (
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    AuthorizationFailed,
    OtpExpired,
    OtpConsumed,
    OtpPending,
    RequestLocked,
    CredentialNotActive,
    CredentialLocked,
    NoActiveDevice,
    NoEmailAddress,
    Conflict,
    DeviceNotEligible,
    PhoneMismatch,
    RateLimited,
    ServiceUnavailable,
    TokenNotValid,
    TokenExpired,
    TokenConsumed,
    ActivationCodeRejected,
    ActivationLocked,
    ActivationCodeExpired,
    ActivationCodeConsumed,
    UnregisteredPhone,
    SignatureRejected,
)


# --- Rendering: one renderer per wire format. The router says which one its routes speak
# (app.routing); `PROBLEMS` is the native API's, app.schemas.csc.CSC_ERRORS the CSC API's.


@dataclass(frozen=True)
class ErrorAnswer:
    """An error as a wire format writes it (app.main and app.middleware send it)."""

    status: int
    content: dict[str, Any]
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


class ErrorFormat(Protocol):
    """How one API writes its errors: each kind of failure, and its routes' OpenAPI answers."""

    def domain(self, error: DomainError) -> ErrorAnswer: ...

    def invalid_request(self, problems: Sequence[Mapping[str, Any]]) -> ErrorAnswer:
        """The body or a parameter failed validation (FastAPI's error list)."""
        ...

    def http_error(
        self, status: int, detail: str, headers: dict[str, str], allowed: Callable[[], list[str]]
    ) -> ErrorAnswer:
        """Routing's refusals (404, 405: `allowed` lists the resource's methods)."""
        ...

    def encode_early(self, answer: ErrorAnswer) -> bytes:
        """The body of a refusal sent before routing (app.middleware's body rules)."""
        ...

    def document(self, operation: dict[str, Any]) -> None:
        """Describe the error answers of one OpenAPI operation of this format."""
        ...


def problem_body(
    *, status: int, code: str, title: str, detail: str, **extra: Any
) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def domain_problem(error: DomainError) -> dict[str, Any]:
    return problem_body(
        status=error.status,
        code=error.code,
        title=error.title,
        detail=error.detail,
        **error.extra,
    )


_HTTP_CODES = {404: ("not_found", "Not found"), 405: ("method_not_allowed", "Method not allowed")}


class ProblemFormat:
    """RFC 9457 `application/problem+json`, with a stable `code`: the native API's errors."""

    def domain(self, error: DomainError) -> ErrorAnswer:
        return self._answer(error.status, domain_problem(error), error.headers)

    def invalid_request(self, problems: Sequence[Mapping[str, Any]]) -> ErrorAnswer:
        if any(problem.get("type") == "json_invalid" for problem in problems):
            body = problem_body(
                status=400,
                code="bad_request",
                title="Bad request",
                detail="the request body is not valid JSON",
            )
            return self._answer(400, body)
        errors = [
            {"pointer": json_pointer(problem.get("loc", ())), "detail": problem_message(problem)}
            for problem in problems
        ]
        body = problem_body(
            status=422,
            code="validation_error",
            title="Invalid request",
            detail="; ".join(f"{e['pointer'] or '/'}: {e['detail']}" for e in errors),
            errors=errors,
        )
        return self._answer(422, body)

    def http_error(
        self, status: int, detail: str, headers: dict[str, str], allowed: Callable[[], list[str]]
    ) -> ErrorAnswer:
        code, title = _HTTP_CODES.get(status, ("bad_request", "Bad request"))
        body = problem_body(status=status, code=code, title=title, detail=detail)
        if status == 405:
            headers = {**headers, "Allow": ", ".join(allowed())}
        return self._answer(status, body, headers)

    def encode_early(self, answer: ErrorAnswer) -> bytes:
        return json.dumps(answer.content).encode()

    def document(self, operation: dict[str, Any]) -> None:
        for status, response in operation.get("responses", {}).items():
            if status.isdigit() and int(status) >= 400:
                response["content"] = {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }
                if status == "422" and response.get("description") == "Validation Error":
                    response["description"] = "Invalid request (`validation_error`)"

    @staticmethod
    def _answer(
        status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> ErrorAnswer:
        return ErrorAnswer(status, body, PROBLEM_JSON, headers or {})


PROBLEMS = ProblemFormat()


def json_pointer(loc: Iterable[Any]) -> str:
    """The JSON pointer of a validation error's location (FastAPI's `loc`, without `body`)."""
    parts = [str(part) for part in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return (
        "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)
        if parts
        else ""
    )


def problem_message(problem: Mapping[str, Any]) -> str:
    message = str(problem.get("msg", "invalid"))
    return message.removeprefix("Value error, ")
