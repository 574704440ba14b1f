"""What an audit event holds and how it is chained: its MAC, and the digest a MyKad becomes.

Every event carries `mac = HMAC(audit key, chain, seq, previous event's mac, content)`; the
writer (`app.services.audit.log`) and the check (`app.services.audit.verification`) compute it
here, the same way. Nothing secret is ever written: the MyKad appears only as a keyed digest
(`subject_ref`, for filtering) and masked (`mykad_masked`, for reading).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from app.crypto.keys import MacKey
from app.crypto.secrets import keyed_digest
from app.validation import MYKAD_PATTERN

# The "previous mac" of every chain's first event.
GENESIS_MAC = "0" * 64
MAC_CONTEXT = "roamsign/audit-event/v1"

DetailValue = str | int | bool | None


def subject_ref(subject_key: MacKey, mykad: str) -> str:
    """The keyed digest that stands for a MyKad in the trail (use it to filter events)."""
    return keyed_digest(subject_key, mykad_digits(mykad))


def event_mac(
    mac_key: MacKey,
    *,
    chain: int,
    seq: int,
    previous_mac: str,
    occurred_at: datetime,
    action: str,
    actor: str,
    subject_ref: str | None,
    mykad_masked: str | None,
    target_id: str | None,
    outcome: str,
    details: Mapping[str, DetailValue],
) -> str:
    message = _encode(
        MAC_CONTEXT,
        str(chain),
        str(seq),
        previous_mac,
        occurred_at.astimezone(UTC).isoformat(),
        action,
        actor,
        subject_ref,
        mykad_masked,
        target_id,
        outcome,
        json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    )
    return mac_key.mac(message).hex()


def mykad_digits(mykad: str) -> str:
    match = MYKAD_PATTERN.match(mykad.strip())
    if not match:
        raise ValueError("mykad must be 12 digits")
    return "".join(match.groups())


def _encode(*fields: str | None) -> bytes:
    # Length-prefixed, and None distinct from "": no two different events encode the same.
    out = bytearray()
    for field in fields:
        if field is None:
            out += b"\x00"
        else:
            data = field.encode()
            out += b"\x01" + len(data).to_bytes(4, "big") + data
    return bytes(out)
