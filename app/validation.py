"""Identifier and secret formats of the contract: pure functions that normalise or raise."""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import unicodedata
from datetime import date

MYKAD_PATTERN = re.compile(r"^([0-9]{6})-?([0-9]{2})-?([0-9]{4})$")
HASH_LENGTHS = {"sha256": 32, "sha384": 48, "sha512": 64}
# Malaysian mobile numbers: 01X followed by 7 digits (011 and 015 take 8).
MOBILE_PATTERN = re.compile(r"^01(?:1[0-9]{8}|5[0-9]{8}|[02-46-9][0-9]{7})$")
# Besides repeats and runs, the PINs people pick first (published PIN-frequency studies).
COMMON_PINS = frozenset(
    {
        "121212",
        "112233",
        "123123",
        "111222",
        "123321",
        "147258",
        "159753",
        "131313",
        "696969",
        "112211",
        "101010",
        "202020",
        "200000",
        "100000",
        "000001",
        "999999",
        "11223344",
        "12121212",
        "12341234",
        "1234512345",
        "19871987",
        "20202020",
        "1122334455",
        "123654",
        "456789",
        "147852",
        "258369",
        "852456",
        "741852",
    }
)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Joiners that Jawi and Tamil spelling needs: the only format characters (category Cf) a name
# may hold. Every other one is invisible or turns the text around (bidi controls, zero-width
# space, BOM...), so a name could read differently from what is signed.
ALLOWED_FORMAT_CHARACTERS = frozenset("\u200c\u200d")


def normalise_mykad(value: str) -> str:
    """12 digits (dashes allowed as 6-2-4) whose first six are a date in either century."""
    match = MYKAD_PATTERN.match(value.strip())
    if not match:
        raise ValueError("MyKad must be 12 digits, optionally written 850101-14-5555")
    digits = "".join(match.groups())
    yy, mm, dd = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
    if not any(_is_date(century + yy, mm, dd) for century in (1900, 2000)):
        raise ValueError("MyKad must start with a valid date of birth (YYMMDD)")
    return digits


def mask_mykad(mykad: str) -> str:
    return "*" * 8 + mykad[-4:]


def normalise_phone(value: str) -> str:
    """A Malaysian mobile number in E.164 (+60...); accepts 012..., 6012..., +6012..."""
    compact = re.sub(r"[\s-]", "", value)
    if compact.startswith("+60"):
        local = "0" + compact[3:]
    elif compact.startswith("60"):
        local = "0" + compact[2:]
    else:
        local = compact
    if not MOBILE_PATTERN.match(local):
        raise ValueError("phone must be a Malaysian mobile number such as 012-345 6789")
    return "+60" + local[1:]


def check_pin(pin: str) -> str:
    """6 to 8 digits, not trivial (repeats, runs, a list of common PINs)."""
    if not re.fullmatch(r"[0-9]{6,8}", pin):
        raise ValueError("PIN must be 6 to 8 digits")
    steps = {int(b) - int(a) for a, b in itertools.pairwise(pin)}
    if steps in ({0}, {1}, {-1}):
        raise ValueError("PIN must not be one digit repeated or a run such as 123456")
    if pin in COMMON_PINS:
        raise ValueError("PIN is too common; choose another")
    return pin


def decode_document_hash(value: str, hash_algorithm: str) -> bytes:
    """Hex (either case) or padded standard base64 of a digest of `hash_algorithm`."""
    size = HASH_LENGTHS.get(hash_algorithm)
    if size is None:
        raise ValueError("hash_algorithm must be sha256, sha384 or sha512")
    text = value.strip()
    if len(text) == size * 2 and re.fullmatch(r"[0-9a-fA-F]+", text):
        return bytes.fromhex(text)
    if len(text) == _base64_length(size):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw
    raise ValueError(
        f"document_hash must be a {hash_algorithm} digest: {size * 2} hex or "
        f"{_base64_length(size)} base64 characters"
    )


def check_display_text(value: str, *, max_length: int = 200) -> str:
    """Text a person reads (a person's or a document's name, a description): 1..max characters,
    no control character and nothing invisible or direction-changing (Unicode category Cf, but
    ZWNJ and ZWJ). The one rule for every such input, API and CLI alike."""
    if not value or len(value) > max_length:
        raise ValueError(f"must be 1 to {max_length} characters")
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters")
    if value.isascii():
        return value  # no format character is ASCII: the common case costs nothing more
    for character in value:
        if unicodedata.category(character) == "Cf" and character not in ALLOWED_FORMAT_CHARACTERS:
            raise ValueError(
                "must not contain invisible or direction-changing characters "
                f"(U+{ord(character):04X})"
            )
    return value


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True
