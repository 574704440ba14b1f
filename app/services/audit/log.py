"""The audit trail: append-only events, MAC-chained in several independent chains.

Every event carries `mac = HMAC(audit key, chain, seq, previous event's mac, content)`, and each
chain's last (seq, mac) is kept in its `AuditChainHead`. Anyone who edits, deletes, inserts or
reorders rows without the key breaks a chain, and `verify_audit_trail` names where.

Chains exist so that signatures do not queue behind one global lock: an event locks only its
chain's head, and keeps it locked until the caller's transaction commits, which is what keeps
the chain gap-free. Nothing secret is ever written here: the MyKad appears only as a keyed
digest (`subject_ref`, for filtering) and masked (`mykad_masked`, for reading).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from app.crypto.secrets import keyed_digest
from app.db import insert_with_on_conflict
from app.models import AuditChainHead, AuditEvent
from app.validation import MYKAD_PATTERN, mask_mykad

DEFAULT_CHAINS = 16
_EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
_HEADS: Table = AuditChainHead.__table__  # type: ignore[assignment]
# Built once: constructing a statement and its cache key costs more than running it (every
# signing flow writes several events). Values come as parameters at execution.
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
_LOCK_HEAD = (
    select(_HEADS.c.seq, _HEADS.c.mac)
    .where(_HEADS.c.chain == bindparam("head_chain"))
    .with_for_update()
)
_MOVE_HEAD = (
    update(_HEADS)
    .where(_HEADS.c.chain == bindparam("head_chain"))
    .values(seq=bindparam("head_seq"), mac=bindparam("head_mac"))
)
# The columns an event is written with (all but its id).
EVENT_COLUMNS = (
    "chain",
    "seq",
    "occurred_at",
    "action",
    "actor",
    "subject_ref",
    "mykad_masked",
    "target_id",
    "outcome",
    "details",
    "mac",
)
# PostgreSQL: the INSERT and the head's move in one statement (a data-modifying WITH), one round
# trip less per event. The event's parameters are prefixed: unprefixed ones named like a head
# column (chain, seq, mac) would be added to the UPDATE's SET.
_INSERT_EVENT_MOVING_HEAD = (
    insert(_EVENTS)
    .values(
        {name: bindparam(f"event_{name}", type_=_EVENTS.c[name].type) for name in EVENT_COLUMNS}
    )
    .add_cte(_MOVE_HEAD.cte("moved_head"))
    .returning(_EVENTS.c.id)
)
# The "previous mac" of every chain's first event.
GENESIS_MAC = "0" * 64
MAC_CONTEXT = "roamsign/audit-event/v1"
MAX_PAGE = 1000
VERIFY_BATCH = 1000

DetailValue = str | int | bool | None

# A guard against a careless caller, not a proof: a details key is refused when one of its words
# names a secret, or when its last word is "key" ("api_key" is refused, "key_algorithm" is not).
_SECRET_WORDS = frozenset(
    {
        "otp",
        "hotp",
        "totp",
        "pin",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "mykad",
    }
)
_SECRET_LAST_WORDS = frozenset({"key", "keys"})
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")
_COLUMN_LENGTHS = {"action": 64, "actor": 100, "target_id": 36, "outcome": 40}
# Set on `Session.info`: the chain the session's current transaction has already locked.
_PINNED_CHAIN = "roamsign.audit.pinned_chain"
# Set on `Session.info`: (transaction or savepoint, chain, seq, mac) of the head as the last event
# recorded in it left it. The row stays locked until the transaction ends, so a further event in
# the same (innermost) transaction needs no SELECT ... FOR UPDATE; a savepoint is its own key,
# so one rolled back never leaves a head the database no longer has.
_MOVED_HEAD = "roamsign.audit.moved_head"


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


def subject_ref(subject_key: bytes, mykad: str) -> str:
    """The keyed digest that stands for a MyKad in the trail (use it to filter events)."""
    return keyed_digest(subject_key, _digits(mykad))


def chain_for(partition_key: str, chains: int) -> int:
    """A stable chain number: the same key lands on the same chain in every process."""
    digest = hashlib.sha256(partition_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % chains


@dataclass(frozen=True)
class RecordedEvent:
    """One audit event as `AuditLog.record` stored it."""

    id: int
    chain: int
    seq: int
    occurred_at: datetime
    action: str
    actor: str
    subject_ref: str | None
    mykad_masked: str | None
    target_id: str | None
    outcome: str
    details: dict[str, DetailValue]
    mac: str


class AuditLog:
    """Appends events to the audit trail inside the caller's transaction; never commits.

    Record an event in the same transaction as the change it describes, as late as possible:
    the chain's head stays locked (`SELECT ... FOR UPDATE`) until that transaction ends, so
    recording last keeps the lock short and never holds it while waiting for business rows.

    The chain is picked from the subject (else the target, else the actor). All the events of
    one transaction go to the chain its first event picked, so a transaction holds at most one
    head lock and two transactions can never deadlock on heads taken in opposite orders.
    """

    def __init__(
        self, session: Session, mac_key: bytes, subject_key: bytes, chains: int = DEFAULT_CHAINS
    ) -> None:
        if chains < 1:
            raise ValueError("chains must be at least 1")
        if not mac_key or not subject_key:
            raise ValueError("the audit keys must not be empty")
        self._session = session
        self._mac_key = mac_key
        self._subject_key = subject_key
        self._chains = chains

    def record(
        self,
        *,
        now: datetime,
        action: str,
        actor: str,
        outcome: str = "ok",
        mykad: str | None = None,
        target_id: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> RecordedEvent:
        """Append one event (written at once, not flushed with the session's objects); the
        caller's commit makes it permanent. Returns what was stored."""
        if now.tzinfo is None:
            raise ValueError("audit events need a timezone-aware time")
        occurred_at = now.astimezone(UTC)
        _check_lengths(action=action, actor=actor, target_id=target_id, outcome=outcome)
        clean_details = _checked_details(details or {})
        ref = subject_ref(self._subject_key, mykad) if mykad is not None else None
        masked = mask_mykad(_digits(mykad)) if mykad is not None else None

        chain = self._chain(ref or target_id or actor)
        previous_seq, previous_mac = self._lock_head(chain)
        seq = previous_seq + 1
        mac = event_mac(
            self._mac_key,
            chain=chain,
            seq=seq,
            previous_mac=previous_mac,
            occurred_at=occurred_at,
            action=action,
            actor=actor,
            subject_ref=ref,
            mykad_masked=masked,
            target_id=target_id,
            outcome=outcome,
            details=clean_details,
        )
        event = RecordedEvent(
            id=0,
            chain=chain,
            seq=seq,
            occurred_at=occurred_at,
            action=action,
            actor=actor,
            subject_ref=ref,
            mykad_masked=masked,
            target_id=target_id,
            outcome=outcome,
            details=clean_details,
            mac=mac,
        )
        # Core statements on the session's connection (its transaction): an event is written
        # once and never changed, so the ORM's unit of work would only add cost (it was a
        # tenth of a signature's CPU).
        connection = self._session.connection()
        head = {"head_chain": chain, "head_seq": seq, "head_mac": mac}
        if connection.dialect.name == "postgresql":
            row = {f"event_{name}": getattr(event, name) for name in EVENT_COLUMNS}
            event_id = connection.execute(_INSERT_EVENT_MOVING_HEAD, row | head).scalar_one()
        else:
            row = {name: getattr(event, name) for name in EVENT_COLUMNS}
            event_id = connection.execute(_INSERT_EVENT, row).scalar_one()
            connection.execute(_MOVE_HEAD, head)
        self._session.info[_MOVED_HEAD] = (self._innermost_transaction(), chain, seq, mac)
        return dataclasses.replace(event, id=event_id)

    def _innermost_transaction(self) -> object:
        return self._session.get_nested_transaction() or self._session.get_transaction()

    def _chain(self, partition_key: str) -> int:
        transaction = self._session.get_transaction()
        pinned = self._session.info.get(_PINNED_CHAIN)
        if transaction is not None and pinned is not None and pinned[0] is transaction:
            chain: int = pinned[1]
            return chain
        return chain_for(partition_key, self._chains)

    def _lock_head(self, chain: int) -> tuple[int, str]:
        moved = self._session.info.get(_MOVED_HEAD)
        if moved is not None and moved[0] is self._innermost_transaction() and moved[1] == chain:
            return moved[2], moved[3]
        # Core statements, not ORM objects: the sessions keep objects across commits
        # (expire_on_commit=False), and a head read from the identity map could be stale.
        connection = self._session.connection()
        row = connection.execute(_LOCK_HEAD, {"head_chain": chain}).one_or_none()
        if row is None:
            self._create_head(chain)
            row = connection.execute(_LOCK_HEAD, {"head_chain": chain}).one()
        self._session.info[_PINNED_CHAIN] = (self._session.get_transaction(), chain)
        return row.seq, row.mac

    def _create_head(self, chain: int) -> None:
        # Two transactions may write the first event of a chain at once: the loser's insert
        # waits for the winner's commit, then does nothing, and its SELECT FOR UPDATE
        # (a new snapshot under READ COMMITTED) finds the winner's head.
        dialect = self._session.get_bind().dialect.name
        self._session.execute(
            insert_with_on_conflict(dialect, AuditChainHead)
            .values(chain=chain, seq=0, mac=GENESIS_MAC)
            .on_conflict_do_nothing()
        )


def event_mac(
    mac_key: bytes,
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
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


def verify_audit_trail(
    session: Session, mac_key: bytes, *, batch_size: int = VERIFY_BATCH
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
    """
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
            chain, previous_seq, previous_mac, previous_id = row.chain, 0, GENESIS_MAC, 0
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
            head = heads.get(row.chain)
            if (
                head is not None
                and head[0] == row.seq
                and not hmac.compare_digest(head[1], row.mac)
            ):
                reason = "the chain head's MAC differs from this event's"
        if reason is not None:
            tally.add(AuditBreak(row.id, row.chain, row.seq, reason))
        previous_seq, previous_mac, previous_id = row.seq, row.mac, row.id
    if chain is not None:
        tally.add(_check_head(session, chain, previous_seq, heads.pop(chain, None)))
    for head_chain, (head_seq, _mac) in heads.items():
        if head_seq > 0:
            tally.add(_check_head(session, head_chain, 0, (head_seq, _mac)))
    return AuditVerification(
        ok=tally.count == 0, checked=checked, first_broken=tally.first, breaks=tally.count
    )


def query_events(
    session: Session,
    *,
    subject_ref: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[AuditEvent]:
    """A page of events in id order; pass the last id seen as `after_id` for the next page."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1 to {MAX_PAGE}")
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)
    if subject_ref is not None:
        query = query.where(AuditEvent.subject_ref == subject_ref)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if after_id is not None:
        query = query.where(AuditEvent.id > after_id)
    return list(session.scalars(query))


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


def _digits(mykad: str) -> str:
    match = MYKAD_PATTERN.match(mykad.strip())
    if not match:
        raise ValueError("mykad must be 12 digits")
    return "".join(match.groups())


def _check_lengths(**fields: str | None) -> None:
    for name, value in fields.items():
        if value is not None and len(value) > _COLUMN_LENGTHS[name]:
            raise ValueError(f"{name} is longer than {_COLUMN_LENGTHS[name]} characters")


def _checked_details(details: Mapping[str, DetailValue]) -> dict[str, DetailValue]:
    clean: dict[str, DetailValue] = {}
    for key, value in details.items():
        words = [word.lower() for word in _WORD_BREAK.split(key) if word]
        if not words or _SECRET_WORDS.intersection(words) or words[-1] in _SECRET_LAST_WORDS:
            raise ValueError(f"audit details must not hold secrets: key {key!r} refused")
        if value is not None and not isinstance(value, str | int | bool):
            raise ValueError(f"audit detail {key!r} must be a string, integer, boolean or None")
        if isinstance(value, str) and MYKAD_PATTERN.match(value.strip()):
            raise ValueError(f"audit detail {key!r} looks like a MyKad; pass it as `mykad`")
        clean[key] = value
    return clean


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
