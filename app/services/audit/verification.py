"""Checking the audit trail: every chain recomputed, the first break named."""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keys import MacKey
from app.models import AuditChainHead, AuditEvent
from app.services.audit.event import GENESIS_MAC, event_mac

VERIFY_BATCH = 1000


class AuditBreak(NamedTuple):
    """Where the trail stops verifying. `event_id` is None when the break is at the head."""

    event_id: int | None
    chain: int
    seq: int
    reason: str


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    checked: int
    first_broken: AuditBreak | None = None
    breaks: int = 0


# chain -> seq -> (MAC, the checkpoint that recorded it): app.services.audit.checkpoint.
ExpectedHeads = Mapping[int, Mapping[int, tuple[str, str]]]


def verify_audit_trail(
    session: Session,
    mac_key: MacKey,
    *,
    batch_size: int = VERIFY_BATCH,
    checkpoints: ExpectedHeads | None = None,
) -> AuditVerification:
    """Recompute every chain and report the first event that does not verify.

    Each event is checked against the event stored before it in its chain: its seq must follow
    on (a gap means deleted events), its id must be larger (ids grow in insertion order within a
    chain, so a smaller one means rows were renumbered), and its MAC must match its content and
    the previous MAC (edited content, forged or moved events). A head must match the event at
    its seq, and no chain may end before its head (events deleted from the end). The chains are
    the ones found in the data, so the check needs no chain count.

    Because each event is checked against its stored predecessor, one edit breaks one or two
    events rather than everything after it. Of all the breaks, `first_broken` is the one with
    the smallest event id (the oldest damage); breaks at a head have no event and come after
    every event break, ordered by chain. `breaks` counts them all.

    The heads are read before the events are streamed (`batch_size` rows at a time), so events
    appended meanwhile only extend a chain past its head, which is accepted if their MACs
    verify, and a head created meanwhile is looked up again: the check runs against a live
    database without locking it. (On SQLite the session's transaction still takes the write
    lock, see app/db.py, so writers wait for the check.)

    The chains found in the data cannot tell a chain cut short with its head moved back, or
    deleted with its head: `checkpoints` (signed heads kept outside the database) can. Every
    checkpointed chain must still exist, reach each checkpointed seq and have the
    checkpointed MAC there; a trail that grew after the last checkpoint still verifies.
    """
    checkpointed_heads = checkpoints or {}
    seen_chains: set[int] = set()
    heads = {
        row.chain: (row.seq, row.mac)
        for row in session.execute(
            select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.mac)
        )
    }
    columns = (
        AuditEvent.id,
        AuditEvent.chain,
        AuditEvent.seq,
        AuditEvent.occurred_at,
        AuditEvent.action,
        AuditEvent.actor,
        AuditEvent.subject_ref,
        AuditEvent.mykad_masked,
        AuditEvent.target_id,
        AuditEvent.outcome,
        AuditEvent.details,
        AuditEvent.mac,
    )
    rows = session.execute(
        select(*columns)
        .order_by(AuditEvent.chain, AuditEvent.seq)
        .execution_options(yield_per=batch_size)
    )
    tally = _Tally()
    checked = 0
    chain: int | None = None
    previous_seq, previous_mac, previous_id = 0, GENESIS_MAC, 0
    for row in rows:
        if row.chain != chain:
            if chain is not None:
                tally.add(_check_head(session, chain, previous_seq, heads.pop(chain, None)))
                tally.add(_check_end(chain, previous_seq, checkpointed_heads.get(chain)))
            chain, previous_seq, previous_mac, previous_id = row.chain, 0, GENESIS_MAC, 0
            seen_chains.add(chain)
        checked += 1
        expected = event_mac(
            mac_key,
            chain=row.chain,
            seq=row.seq,
            previous_mac=previous_mac,
            occurred_at=row.occurred_at,
            action=row.action,
            actor=row.actor,
            subject_ref=row.subject_ref,
            mykad_masked=row.mykad_masked,
            target_id=row.target_id,
            outcome=row.outcome,
            details=row.details,
        )
        reason: str | None = None
        if row.seq != previous_seq + 1:
            reason = f"seq {previous_seq + 1}..{row.seq - 1} missing before this event: deleted"
        elif row.id <= previous_id:
            reason = f"id {row.id} after id {previous_id} in the chain: events reordered"
        elif not hmac.compare_digest(expected, row.mac):
            reason = "MAC mismatch: the event was changed, moved or forged"
        else:
            reason = _check_recorded_mac(
                row.seq, row.mac, heads.get(row.chain), checkpointed_heads.get(row.chain)
            )
        if reason is not None:
            tally.add(AuditBreak(row.id, row.chain, row.seq, reason))
        previous_seq, previous_mac, previous_id = row.seq, row.mac, row.id
    if chain is not None:
        tally.add(_check_head(session, chain, previous_seq, heads.pop(chain, None)))
        tally.add(_check_end(chain, previous_seq, checkpointed_heads.get(chain)))
    for missing in _missing_chains(checkpointed_heads, seen_chains):
        tally.add(missing)
    for head_chain, (head_seq, _mac) in heads.items():
        if head_seq > 0:
            tally.add(_check_head(session, head_chain, 0, (head_seq, _mac)))
    return AuditVerification(
        ok=tally.count == 0, checked=checked, first_broken=tally.first, breaks=tally.count
    )


class _Tally:
    def __init__(self) -> None:
        self.first: AuditBreak | None = None
        self.count = 0

    def add(self, found: AuditBreak | None) -> None:
        if found is None:
            return
        self.count += 1
        if self.first is None or _order(found) < _order(self.first):
            self.first = found


def _order(found: AuditBreak) -> tuple[float, int, int]:
    return (math.inf if found.event_id is None else found.event_id, found.chain, found.seq)


def _check_recorded_mac(
    seq: int,
    mac: str,
    head: tuple[int, str] | None,
    checkpointed: Mapping[int, tuple[str, str]] | None,
) -> str | None:
    """The MAC a head or a checkpoint recorded for this event, if any, must be its own."""
    if head is not None and head[0] == seq and not hmac.compare_digest(head[1], mac):
        return "the chain head's MAC differs from this event's"
    recorded = checkpointed.get(seq) if checkpointed else None
    if recorded is not None and not hmac.compare_digest(recorded[0], mac):
        return f"the MAC differs from checkpoint {recorded[1]}: the chain was rewritten"
    return None


def _missing_chains(checkpointed_heads: ExpectedHeads, seen: set[int]) -> list[AuditBreak]:
    missing = []
    for chain in sorted(set(checkpointed_heads) - seen):
        seq, source = _last_checkpointed(checkpointed_heads[chain])
        empty = "" if seen else " (the trail is empty)"
        missing.append(
            AuditBreak(
                None,
                chain,
                seq,
                f"chain {chain} is missing: checkpoint {source} saw it at seq {seq}{empty}",
            )
        )
    return missing


def _last_checkpointed(seqs: Mapping[int, tuple[str, str]]) -> tuple[int, str]:
    seq = max(seqs)
    return seq, seqs[seq][1]


def _check_end(
    chain: int, last_seq: int, checkpointed: Mapping[int, tuple[str, str]] | None
) -> AuditBreak | None:
    if not checkpointed:
        return None
    seq, source = _last_checkpointed(checkpointed)
    if last_seq < seq:
        return AuditBreak(
            None,
            chain,
            seq,
            f"chain {chain} ends at seq {last_seq}, before checkpoint {source} at seq {seq}: "
            "events deleted from its end",
        )
    return None


def _check_head(
    session: Session, chain: int, last_seq: int, head: tuple[int, str] | None
) -> AuditBreak | None:
    if head is None:
        # Created after the heads were read (the chain's first event is new)? Then it is fine.
        created = session.scalar(select(AuditChainHead.chain).where(AuditChainHead.chain == chain))
        if created is None:
            return AuditBreak(None, chain, last_seq, "the chain has events but no head")
        return None
    head_seq, _mac = head
    if last_seq < head_seq:
        return AuditBreak(
            None, chain, head_seq, f"seq {last_seq + 1}..{head_seq} missing at the end: deleted"
        )
    return None
