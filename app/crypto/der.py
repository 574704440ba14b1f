"""DER tag-length-value framing, for splicing parts into a structure we built ourselves.

asn1crypto re-encodes a structure by copying and re-tagging every part (milliseconds per
CMS); adding an unsigned attribute or validation data to a SignedData needs only its framing
read and written again. Single-byte tags only (all CMS, TSP and OCSP use), definite lengths.
"""

from __future__ import annotations

SEQUENCE, SET, OCTET_STRING = 0x30, 0x31, 0x04
CONTEXT_0, CONTEXT_1 = 0xA0, 0xA1


class DerError(ValueError):
    """Not the DER this module reads."""


def tlv(tag: int, content: bytes) -> bytes:
    """One DER tag-length-value (definite length, short or long form)."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


def split(der: bytes) -> tuple[int, bytes]:
    """The tag and contents of the one TLV `der` is (nothing may follow it)."""
    tag, start, end = _header(der, 0)
    if end != len(der):
        raise DerError("trailing bytes after the value")
    return tag, der[start:end]


def children(contents: bytes) -> list[bytes]:
    """The TLVs, each whole, that make up a constructed value's contents."""
    found: list[bytes] = []
    offset = 0
    while offset < len(contents):
        _tag, _start, end = _header(contents, offset)
        found.append(contents[offset:end])
        offset = end
    return found


def _header(data: bytes, offset: int) -> tuple[int, int, int]:
    if offset + 2 > len(data):
        raise DerError("truncated")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not read here")
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or start + size > len(data):
            raise DerError("unsupported length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    end = start + length
    if end > len(data):
        raise DerError("truncated")
    return tag, start, end
