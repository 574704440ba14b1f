"""Field types of the contract, validated and normalised on the way in."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from app.validation import check_display_text, check_pin, normalise_mykad, normalise_phone

_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"\x00-\x1f\x7f-\x9f]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)


# RFC 3339 s.5.6 date-time; pydantic alone would also take a Unix time (a number, or digits).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def _require_rfc3339(value: object) -> object:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 time with its offset, e.g. 2026-11-27T10:00:00Z")
    return value


class RequestModel(BaseModel):
    """A request body: unknown fields are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _check_email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("must be an e-mail address such as aisyah@jdn.gov.my")
    return value


def _check_name(value: str) -> str:
    return check_display_text(value.strip(), max_length=200)


def _check_agency(value: str) -> str:
    return check_display_text(value.strip(), max_length=100)


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_require_rfc3339)]
MyKad = Annotated[
    str,
    Field(
        max_length=14,
        description="12-digit MyKad, optionally with dashes (850101-14-5555); stored normalised",
        examples=["850101145555"],
    ),
    AfterValidator(normalise_mykad),
]
Phone = Annotated[
    str,
    Field(
        max_length=20,
        description="Malaysian mobile number; stored as E.164",
        examples=["+60123456789"],
    ),
    AfterValidator(normalise_phone),
]
Email = Annotated[
    str, Field(max_length=254, examples=["aisyah@jdn.gov.my"]), AfterValidator(_check_email)
]
PersonName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_name)]
Agency = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_check_agency)]
Pin = Annotated[
    str,
    Field(
        min_length=6, max_length=8, description="6 to 8 digits, not trivial", examples=["583920"]
    ),
    AfterValidator(check_pin),
]
DocumentName = Annotated[
    str,
    Field(min_length=1, max_length=200, description="What the person approves; shown verbatim"),
    AfterValidator(check_display_text),
]
