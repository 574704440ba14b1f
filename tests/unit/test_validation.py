"""The identifier and secret formats of the contract: MyKad, phones, PINs, hashes, display text."""

from __future__ import annotations

import base64
import hashlib

import pytest

from app.validation import (
    check_display_text,
    check_pin,
    decode_document_hash,
    mask_mykad,
    normalise_mykad,
    normalise_phone,
)


def digest(algorithm: str, text: str = "Baucar Bayaran PV-2026-000123") -> bytes:
    return hashlib.new(algorithm, text.encode()).digest()


# MyKad


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("850101145555", "850101145555"),
        ("850101-14-5555", "850101145555"),
        (" 850101-14-5555 ", "850101145555"),
        ("991231015678", "991231015678"),
        ("000229101234", "000229101234"),  # 2000-02-29: a leap day in the 2000s
        ("000101-01-0001", "000101010001"),
    ],
)
def test_mykad_is_stored_as_twelve_digits(given: str, stored: str) -> None:
    assert normalise_mykad(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "85010-114-5555",
        "8501011-4-5555",
        "850101-1-45555",
        "850101-145-555",
        "8501-0114-5555",
        "850101--145555",
        "850101 14 5555",
        "850101/14/5555",
    ],
)
def test_mykad_dashes_only_in_the_six_two_four_pattern(given: str) -> None:
    with pytest.raises(ValueError, match="12 digits"):
        normalise_mykad(given)


@pytest.mark.parametrize(
    "given",
    [
        "010229145555",  # 1901-02-29 and 2001-02-29: no leap day in either century
        "851301145555",  # month 13
        "850001145555",  # month 0
        "850100145555",  # day 0
        "850431145555",  # 31 April
        "850230145555",  # 30 February
    ],
)
def test_mykad_must_start_with_a_date_of_birth(given: str) -> None:
    with pytest.raises(ValueError, match="date of birth"):
        normalise_mykad(given)


@pytest.mark.parametrize(
    "given", ["85010114555", "8501011455555", "", "85O101145555", "850101145555\n1"]
)
def test_mykad_must_have_twelve_ascii_digits(given: str) -> None:
    with pytest.raises(ValueError, match="12 digits"):
        normalise_mykad(given)


def test_mykad_masking_keeps_the_last_four_digits() -> None:
    assert mask_mykad("850101145555") == "********5555"
    assert mask_mykad(normalise_mykad("900101-14-0042")) == "********0042"


# Phone numbers


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("0123456789", "+60123456789"),
        ("60123456789", "+60123456789"),
        ("+60123456789", "+60123456789"),
        ("012-345 6789", "+60123456789"),
        ("+60 12-345 6789", "+60123456789"),
        ("019 876 5432", "+60198765432"),
        ("01112345678", "+601112345678"),  # 011 takes eight digits after it
        ("+6011-1234 5678", "+601112345678"),
        ("01512345678", "+601512345678"),
    ],
)
def test_mobile_numbers_are_stored_in_e164(given: str, stored: str) -> None:
    assert normalise_phone(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "0312345678",  # Kuala Lumpur landline
        "+60312345678",
        "0412345678",  # Penang landline
        "0111234567",  # 011 needs eight digits
        "011123456789",
        "012345678",  # 012 needs seven digits
        "01234567890",
        "123456789",
        "+65123456789",  # Singapore
        "0123456789x",
        "",
    ],
)
def test_anything_but_a_malaysian_mobile_number_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="Malaysian mobile"):
        normalise_phone(given)


# PINs


@pytest.mark.parametrize("pin", ["583920", "5839201", "58392017", "048213", "902847"])
def test_good_pins_are_accepted(pin: str) -> None:
    assert check_pin(pin) == pin


@pytest.mark.parametrize("pin", ["58392", "583920174", "", "58a920", "583 920", "583920\n"])
def test_pins_are_six_to_eight_ascii_digits(pin: str) -> None:
    with pytest.raises(ValueError, match="6 to 8 digits"):
        check_pin(pin)


@pytest.mark.parametrize(
    "pin",
    [
        *("000000", "111111", "9999999", "77777777"),
        *("123456", "1234567", "12345678", "234567"),
        *("654321", "987654", "87654321", "3456789"),
    ],
)
def test_repeats_and_runs_are_refused(pin: str) -> None:
    with pytest.raises(ValueError, match="repeated or a run"):
        check_pin(pin)


@pytest.mark.parametrize(
    "pin", ["121212", "112233", "123123", "147258", "159753", "696969", "11223344", "12341234"]
)
def test_common_pins_are_refused(pin: str) -> None:
    with pytest.raises(ValueError, match="too common"):
        check_pin(pin)


# Python's \d matches every Unicode decimal digit; the contract's digits are ASCII only.
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + n) for n in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + n) for n in range(10)))


@pytest.mark.parametrize("digits", [FULLWIDTH, ARABIC_INDIC], ids=["fullwidth", "arabic-indic"])
def test_mykad_refuses_non_ascii_digits(digits: dict[int, str]) -> None:
    with pytest.raises(ValueError, match="12 digits"):
        normalise_mykad("850101145555".translate(digits))


@pytest.mark.parametrize("digits", [FULLWIDTH, ARABIC_INDIC], ids=["fullwidth", "arabic-indic"])
def test_phone_refuses_non_ascii_digits(digits: dict[int, str]) -> None:
    with pytest.raises(ValueError, match="Malaysian mobile"):
        normalise_phone("012" + "3456789".translate(digits))


@pytest.mark.parametrize("digits", [FULLWIDTH, ARABIC_INDIC], ids=["fullwidth", "arabic-indic"])
def test_pin_refuses_non_ascii_digits(digits: dict[int, str]) -> None:
    with pytest.raises(ValueError, match="6 to 8 digits"):
        check_pin("583920".translate(digits))


# Document hashes


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize(
    "encode",
    [
        lambda raw: raw.hex(),
        lambda raw: raw.hex().upper(),
        lambda raw: base64.b64encode(raw).decode(),
    ],
    ids=["hex", "HEX", "base64"],
)
def test_document_hash_decodes_in_every_encoding(algorithm: str, encode: object) -> None:
    raw = digest(algorithm)
    text = encode(raw)  # type: ignore[operator]
    assert decode_document_hash(text, algorithm) == raw


@pytest.mark.parametrize(
    ("algorithm", "hex_chars", "b64_chars"),
    [
        ("sha256", 64, 44),
        ("sha384", 96, 64),
        ("sha512", 128, 88),
    ],
)
def test_encoded_lengths_match_the_contract(algorithm: str, hex_chars: int, b64_chars: int) -> None:
    raw = digest(algorithm)
    assert len(raw.hex()) == hex_chars
    assert len(base64.b64encode(raw)) == b64_chars


@pytest.mark.parametrize(
    ("algorithm", "other", "encoding"),
    [
        ("sha256", "sha384", "hex"),
        ("sha256", "sha384", "base64"),
        ("sha256", "sha512", "hex"),
        ("sha256", "sha512", "base64"),
        ("sha384", "sha256", "base64"),
        ("sha384", "sha512", "hex"),
        ("sha384", "sha512", "base64"),
        ("sha512", "sha256", "hex"),
        ("sha512", "sha384", "base64"),
    ],
)
def test_a_digest_of_another_algorithm_is_refused(
    algorithm: str, other: str, encoding: str
) -> None:
    raw = digest(other)
    text = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()
    with pytest.raises(ValueError, match=f"{algorithm} digest"):
        decode_document_hash(text, algorithm)


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_wrong_lengths_are_refused(algorithm: str) -> None:
    hex_text = digest(algorithm).hex()
    for wrong in (hex_text[:-1], hex_text + "0", hex_text[:-2], hex_text + "00", "", "00"):
        with pytest.raises(ValueError, match=f"{algorithm} digest"):
            decode_document_hash(wrong, algorithm)


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_non_hex_characters_of_the_hex_length_are_refused(algorithm: str) -> None:
    hex_text = digest(algorithm).hex()
    with pytest.raises(ValueError, match=f"{algorithm} digest"):
        decode_document_hash("g" + hex_text[1:], algorithm)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_unpadded_base64_is_refused(algorithm: str) -> None:
    padded = base64.b64encode(digest(algorithm)).decode()
    assert padded.endswith("=")
    with pytest.raises(ValueError, match=f"{algorithm} digest"):
        decode_document_hash(padded.rstrip("="), algorithm)


def test_base64_with_the_wrong_padding_is_refused() -> None:
    padded = base64.b64encode(digest("sha256")).decode()
    assert padded.endswith("=") and not padded.endswith("==")
    with pytest.raises(ValueError, match="sha256 digest"):
        decode_document_hash(padded[:-2] + "==", "sha256")


@pytest.mark.parametrize("bad", ["!", "-", "_", " ", "é", "*"])
def test_base64_with_invalid_characters_is_refused(bad: str) -> None:
    text = base64.b64encode(digest("sha256")).decode()
    spoiled = text[:10] + bad + text[11:]
    assert len(spoiled) == len(text)
    with pytest.raises(ValueError, match="sha256 digest"):
        decode_document_hash(spoiled, "sha256")


def test_url_safe_base64_is_not_standard_base64() -> None:
    raw = next(
        digest("sha256", f"document {n}")
        for n in range(1000)
        if set(base64.b64encode(digest("sha256", f"document {n}")).decode()) & set("+/")
    )
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert urlsafe != base64.b64encode(raw).decode()
    with pytest.raises(ValueError, match="sha256 digest"):
        decode_document_hash(urlsafe, "sha256")


def test_sixty_four_characters_are_hex_for_sha256_and_base64_for_sha384() -> None:
    # 64 characters is both SHA-256 in hex and SHA-384 in base64; hex digits are valid base64,
    # so the same text decodes differently, each by its own algorithm's length rule.
    text = digest("sha256").hex()
    assert decode_document_hash(text, "sha256") == bytes.fromhex(text)
    as_sha384 = decode_document_hash(text, "sha384")
    assert as_sha384 == base64.b64decode(text)
    assert len(as_sha384) == 48


def test_sha384_base64_with_non_hex_characters_is_not_a_sha256() -> None:
    raw = next(
        digest("sha384", f"document {n}")
        for n in range(1000)
        if set(base64.b64encode(digest("sha384", f"document {n}")).decode()) & set("+/")
    )
    text = base64.b64encode(raw).decode()
    assert len(text) == 64
    assert decode_document_hash(text, "sha384") == raw
    with pytest.raises(ValueError, match="sha256 digest"):
        decode_document_hash(text, "sha256")


def test_sha256_base64_is_not_a_sha384() -> None:
    text = base64.b64encode(digest("sha256")).decode()
    with pytest.raises(ValueError, match="sha384 digest"):
        decode_document_hash(text, "sha384")


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "SHA256", "sha3_256", ""])
def test_unknown_hash_algorithms_are_refused(algorithm: str) -> None:
    with pytest.raises(ValueError, match="hash_algorithm"):
        decode_document_hash(digest("sha256").hex(), algorithm)


# Display text


@pytest.mark.parametrize(
    "text",
    [
        "Baucar Bayaran PV-2026-000123",
        "Baucar <b>O'Brien</b>",
        "<script>alert(1)</script>",
        'Pesanan & "Kontrak" 2026',
        "Bayaran \u2013 Dewan Bandaraya Kuala Lumpur (ü, 日本)",
        "x",
        "a" * 200,
    ],
)
def test_display_text_is_kept_verbatim(text: str) -> None:
    assert check_display_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "Baucar\x00Bayaran",
        "Baucar\nBayaran",
        "Baucar\r\nBcc: x@example.com",
        "Baucar\tBayaran",
        "Baucar\x1bBayaran",
        "Baucar\x7fBayaran",
        "Baucar\x85Bayaran",
        "Baucar\u2028Bayaran",
        "Baucar\u2029Bayaran",
    ],
)
def test_control_characters_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        check_display_text(text)


@pytest.mark.parametrize("text", ["", "a" * 201, "é" * 201])
def test_display_text_is_one_to_two_hundred_characters(text: str) -> None:
    with pytest.raises(ValueError, match="1 to 200"):
        check_display_text(text)


def test_display_text_limit_is_configurable() -> None:
    assert check_display_text("a" * 100, max_length=100) == "a" * 100
    with pytest.raises(ValueError, match="1 to 100"):
        check_display_text("a" * 101, max_length=100)


INVISIBLE_OR_BIDI = [
    *(chr(code) for code in range(0x202A, 0x202F)),  # LRE RLE PDF LRO RLO
    *(chr(code) for code in range(0x2066, 0x206A)),  # LRI RLI FSI PDI
    "\u200e",  # LRM
    "\u200f",  # RLM
    "\u061c",  # ALM
    "\u200b",  # zero-width space
    "\ufeff",  # BOM, zero-width no-break space
    "\u00ad",  # soft hyphen: every other format character (Cf) too
    "\u2060",  # word joiner
    "\u2064",  # invisible plus
    "\ufff9",  # interlinear annotation anchor
    "\U000e0041",  # tag latin capital a
]


@pytest.mark.parametrize(
    "character", INVISIBLE_OR_BIDI, ids=[f"U+{ord(c):04X}" for c in INVISIBLE_OR_BIDI]
)
def test_invisible_and_direction_changing_characters_are_refused(character: str) -> None:
    for text in (f"Baucar{character}Bayaran", f"{character}Baucar", "باوچر" + character):
        with pytest.raises(
            ValueError, match=f"direction-changing characters \\(U\\+{ord(character):04X}\\)"
        ):
            check_display_text(text)


def test_every_format_character_but_the_joiners_is_refused() -> None:
    import sys
    import unicodedata

    format_characters = [
        chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cf"
    ]
    accepted = [c for c in format_characters if _accepted(f"a{c}b")]
    assert accepted == ["\u200c", "\u200d"]


def _accepted(text: str) -> bool:
    try:
        check_display_text(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    [
        "نور عائشة بنت احمد\u200c",  # Jawi, with a zero-width non-joiner
        "ڤرجنجين\u200cبايرن",  # noqa: RUF001 (Jawi letters, not look-alikes)
        "ஸ்ரீ\u200dநிவாசன்",  # Tamil, with a zero-width joiner
        "கண்\u200cணன்",
    ],
)
def test_the_joiners_jawi_and_tamil_need_are_kept(text: str) -> None:
    assert check_display_text(text) == text
