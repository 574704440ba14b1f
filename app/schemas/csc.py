"""Cloud Signature Consortium API bodies (v1.0.4.0 and v2 spellings) and its error shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from app.errors import (
    AuthorizationFailed,
    DomainError,
    ErrorAnswer,
    Forbidden,
    RateLimited,
    Unauthenticated,
    json_pointer,
    problem_message,
)
from app.services.signing.csc_protocol import decode_hash, hash_algorithm_of
from app.validation import check_display_text, normalise_mykad

CscVersion = Literal["v1", "v2"]
CertificateChoice = Literal["none", "single", "chain"]

_HASH_ITEM_MAX = 200


def _credential_id() -> Any:
    return Field(alias="credentialID", min_length=1, max_length=64)


class CscRequest(BaseModel):
    """A CSC request body. Unknown members are ignored, as the CSC API asks of servers (the
    native API refuses them); v1 and v2 spellings are both accepted on both paths."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class InfoIn(CscRequest):
    lang: str | None = Field(default=None, max_length=35)


class CredentialsListIn(CscRequest):
    user_id: str = Field(alias="userID", min_length=1, max_length=20, description="MyKad")
    max_results: int | None = Field(default=None, alias="maxResults", ge=1, le=1000)
    credential_info: bool = Field(default=False, alias="credentialInfo")
    certificates: CertificateChoice = "single"
    cert_info: bool = Field(default=False, alias="certInfo")
    auth_info: bool = Field(default=True, alias="authInfo")

    # Model-level, as the service's check was: the error reads "userID: ..." without a pointer.
    @model_validator(mode="after")
    def _normalise_mykad(self) -> CredentialsListIn:
        try:
            self.user_id = normalise_mykad(self.user_id)
        except ValueError as error:
            raise ValueError(f"userID: {error}") from None
        return self


class CredentialsInfoIn(CscRequest):
    credential_id: str = _credential_id()
    certificates: CertificateChoice = "single"
    cert_info: bool = Field(default=False, alias="certInfo")
    auth_info: bool = Field(default=True, alias="authInfo")


class _OneHash(CscRequest):
    """`hash` (v1) or `hashes` (v2): exactly one base64 digest, as one OTP signs once.

    Each body decodes it in its own model validator (`_decode`), after the checks that came
    before it: a model-level error reads as its bare message, as CSC errors do.
    """

    hash_v1: list[str] | None = Field(default=None, alias="hash", max_length=16)
    hashes: list[str] | None = Field(default=None, max_length=16)
    hash_algo: str | None = Field(default=None, alias="hashAlgo", max_length=64)
    hash_algorithm_oid: str | None = Field(default=None, alias="hashAlgorithmOID", max_length=64)
    _digest: bytes = PrivateAttr(default=b"")
    _hash_name: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _exactly_one_hash(self) -> _OneHash:
        given = self.hashes if self.hashes is not None else self.hash_v1
        if not given or len(given) != 1:
            raise ValueError(
                "hash (v2: hashes) must be a list of exactly one base64 hash: "
                "one OTP authorizes one signature"
            )
        if len(given[0]) > _HASH_ITEM_MAX:
            raise ValueError("hash is too long for a SHA-2 digest")
        return self

    @property
    def the_hash(self) -> str:
        given = self.hashes if self.hashes is not None else self.hash_v1
        assert given is not None  # checked by the validator
        return given[0]

    @property
    def hash_algorithm(self) -> str | None:
        """The OID given, in either spelling."""
        return self.hash_algorithm_oid or self.hash_algo

    @property
    def digest(self) -> bytes:
        """The hash, decoded."""
        return self._digest

    @property
    def hash_name(self) -> str | None:
        """The hash algorithm the OID names (sha256...), if given and decoded."""
        return self._hash_name


class SendOtpIn(_OneHash):
    """Our extension of `credentials/sendOTP`: the OTP is bound to the one hash to be signed."""

    credential_id: str = _credential_id()
    description: str | None = Field(
        default=None, max_length=400, description="The document's name, shown to the person"
    )

    _document_name: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _decode(self) -> SendOtpIn:
        if self.hash_algorithm is None:
            raise ValueError("hashAlgo (v2: hashAlgorithmOID) is required with the hash")
        self._hash_name = hash_algorithm_of(self.hash_algorithm)
        self._digest = decode_hash(self.the_hash, self._hash_name)
        if self.description is None:
            raise ValueError("description is required: the document's name, shown to the person")
        try:
            self._document_name = check_display_text(self.description)
        except ValueError as error:
            raise ValueError(f"description {error}") from None
        return self

    @property
    def document_name(self) -> str:
        return self._document_name


class AuthData(CscRequest):
    id: str = Field(max_length=32)
    value: str = Field(max_length=64)


class AuthorizeIn(_OneHash):
    credential_id: str = _credential_id()
    num_signatures: int | None = Field(default=None, alias="numSignatures")
    pin: str | None = Field(default=None, alias="PIN", max_length=64)
    otp: str | None = Field(default=None, alias="OTP", max_length=64)
    auth_data: list[AuthData] | None = Field(default=None, alias="authData", max_length=8)

    @model_validator(mode="after")
    def _both_factors(self) -> AuthorizeIn:
        if self.auth_value("PIN") is None or self.auth_value("OTP") is None:
            raise ValueError("both the OTP and the PIN are required (v2: authData)")
        return self

    @model_validator(mode="after")
    def _decode(self) -> AuthorizeIn:
        if self.num_signatures is not None and self.num_signatures != 1:
            raise ValueError("numSignatures must be 1: one OTP authorizes one signature")
        self._hash_name = hash_algorithm_of(self.hash_algorithm) if self.hash_algorithm else None
        self._digest = decode_hash(self.the_hash, self._hash_name)
        return self

    def auth_value(self, name: Literal["PIN", "OTP"]) -> str | None:
        direct = self.pin if name == "PIN" else self.otp
        if direct is not None:
            return direct
        for item in self.auth_data or []:
            if item.id.upper() == name:
                return item.value
        return None


class SignHashIn(_OneHash):
    credential_id: str = _credential_id()
    sad: str = Field(alias="SAD", min_length=1, max_length=200)
    sign_algo: str = Field(alias="signAlgo", min_length=1, max_length=64)
    sign_algo_params: str | None = Field(default=None, alias="signAlgoParams", max_length=2000)

    @model_validator(mode="after")
    def _decode(self) -> SignHashIn:
        # Any SHA-2 length here: the SAD says which algorithm it was issued for.
        self._digest = decode_hash(self.the_hash, None)
        return self


# -- responses ---------------------------------------------------------------------------------


class _Out(BaseModel):
    """Answered with the CSC API's member names (serialisation aliases)."""

    model_config = ConfigDict(serialize_by_alias=True)


class SignAlgorithms(_Out):
    algos: list[str]


class InfoOut(_Out):
    specs: str
    name: str
    logo: str
    region: str
    lang: str
    description: str
    auth_type: list[str] = Field(serialization_alias="authType")
    methods: list[str]
    sign_algorithms: SignAlgorithms | None = Field(
        default=None, serialization_alias="signAlgorithms"
    )


class KeyOut(_Out):
    status: Literal["enabled", "disabled"]
    algo: list[str] = Field(description="OIDs: the key's and every signature algorithm's")
    len: int
    curve: str | None = None


class CertOut(_Out):
    status: Literal["valid", "expired", "revoked"]
    certificates: list[str] | None = Field(
        default=None, description="Base64 DER, the signer's certificate first"
    )
    issuer_dn: str | None = Field(default=None, serialization_alias="issuerDN")
    serial_number: str | None = Field(default=None, serialization_alias="serialNumber")
    subject_dn: str | None = Field(default=None, serialization_alias="subjectDN")
    valid_from: str | None = Field(default=None, serialization_alias="validFrom")
    valid_to: str | None = Field(default=None, serialization_alias="validTo")


class PinOut(_Out):
    presence: Literal["true"] = "true"
    format: Literal["N"] = "N"
    label: str = "PIN"
    description: str = "The 6 to 8 digit PIN of the roaming credential"


class OtpOut(_Out):
    presence: Literal["true"] = "true"
    type: Literal["online"] = "online"
    format: Literal["N"] = "N"
    label: str = "OTP"
    description: str = "The 6-digit code e-mailed after credentials/sendOTP with the hash"
    id: str = Field(default="roamsign-email-otp", serialization_alias="ID")
    provider: str = "roamsign"


class AuthObject(_Out):
    type: Literal["Password"] = "Password"
    id: Literal["PIN", "OTP"]
    format: Literal["N"] = "N"
    label: str
    description: str


class AuthOut(_Out):
    mode: Literal["explicit"] = "explicit"
    expression: str = "PIN AND OTP"
    objects: list[AuthObject]


class CredentialInfoOut(_Out):
    credential_id: str | None = Field(default=None, serialization_alias="credentialID")
    description: str
    key: KeyOut
    cert: CertOut
    auth_mode: Literal["explicit"] | None = Field(default=None, serialization_alias="authMode")
    pin: PinOut | None = Field(default=None, serialization_alias="PIN")
    otp: OtpOut | None = Field(default=None, serialization_alias="OTP")
    auth: AuthOut | None = None
    scal: Literal["2"] = Field(
        default="2",
        serialization_alias="SCAL",
        description=(
            "2: the hash to be signed is bound to the signature activation data (the OTP and "
            "the SAD name it); the OTP and PIN are checked by the service, not inside the HSM"
        ),
    )
    multisign: int = 1
    lang: str = "en-US"


class CredentialsListOut(_Out):
    credential_ids: list[str] = Field(serialization_alias="credentialIDs")
    credential_infos: list[CredentialInfoOut] | None = Field(
        default=None, serialization_alias="credentialInfos"
    )


class AuthorizeOut(_Out):
    sad: str = Field(serialization_alias="SAD", description="Single use, for this hash only")
    expires_in: int = Field(serialization_alias="expiresIn", description="Seconds, at most 60")


class SignHashOut(_Out):
    signatures: list[str] = Field(
        description="Base64 (standard, padded): DER ECDSA, or RSA PKCS#1 v1.5 or PSS"
    )


# -- errors ------------------------------------------------------------------------------------


class CscError(BaseModel):
    """The CSC API's error body (OAuth 2.0 style)."""

    error: str
    error_description: str


def csc_error(error: DomainError) -> tuple[int, CscError]:
    """The CSC answer to a domain error: 400 `invalid_request` unless the contract says
    otherwise. A wrong OTP and a wrong PIN stay indistinguishable (`invalid_otp`)."""
    description = error.detail
    if isinstance(error, AuthorizationFailed):
        remaining = error.extra.get("attempts_remaining")
        if remaining is not None:
            description = f"{description} ({remaining} attempts remaining)"
        return 400, CscError(error="invalid_otp", error_description=description)
    if isinstance(error, Unauthenticated):
        return 401, CscError(error="invalid_token", error_description=description)
    if isinstance(error, Forbidden):
        return 403, CscError(error="access_denied", error_description=description)
    if isinstance(error, RateLimited):
        return 429, CscError(error="rate_limited", error_description=description)
    if error.status >= 500:
        return error.status, CscError(error="server_error", error_description=description)
    return 400, CscError(error="invalid_request", error_description=description)


def csc_invalid_request(description: str) -> tuple[int, CscError]:
    return 400, CscError(error="invalid_request", error_description=description)


class CscFormat:
    """The CSC API's errors: `{"error", "error_description"}` as application/json."""

    def domain(self, error: DomainError) -> ErrorAnswer:
        return _answer(*csc_error(error), error.headers)

    def invalid_request(self, problems: Sequence[Mapping[str, Any]]) -> ErrorAnswer:
        return _answer(*csc_invalid_request(_description(problems)))

    def http_error(
        self, status: int, detail: str, headers: dict[str, str], allowed: Callable[[], list[str]]
    ) -> ErrorAnswer:
        _status, body = csc_invalid_request(detail)
        return _answer(status, body, headers)

    def encode_early(self, answer: ErrorAnswer) -> bytes:
        return CscError.model_validate(answer.content).model_dump_json().encode()

    def document(self, operation: dict[str, Any]) -> None:
        # The routes declare their own error answers (csc_error_responses); a validation
        # failure is `invalid_request`, a 400.
        operation.get("responses", {}).pop("422", None)


CSC_ERRORS = CscFormat()


def _answer(status: int, body: CscError, headers: dict[str, str] | None = None) -> ErrorAnswer:
    return ErrorAnswer(status, body.model_dump(), "application/json", headers or {})


def _description(problems: Sequence[Mapping[str, Any]]) -> str:
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return "the request body is not valid JSON"
    if any(
        problem.get("loc") == ("body",) and problem.get("type") == "missing" for problem in problems
    ):
        return "a JSON object body is required"
    return "; ".join(
        ": ".join(
            part
            for part in (json_pointer(problem.get("loc", ())), problem_message(problem))
            if part
        )
        for problem in problems
    )


def csc_error_responses(*extra: int, keyed: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a CSC route (`keyed=False`: one that needs no API key)."""
    descriptions = {
        400: "`invalid_request` (each cause with its own description) or `invalid_otp` "
        "(a wrong OTP or a wrong PIN, never said which)",
        401: "`invalid_token`: no, an unknown or a revoked API key",
        403: "`access_denied`: the API key's role is not `signer`",
        429: "`rate_limited`, with `Retry-After`",
    }
    wanted = (400, *((401, 403) if keyed else ()), *extra)
    return {status: {"model": CscError, "description": descriptions[status]} for status in wanted}
