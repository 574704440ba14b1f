"""The audit trail: append-only events, MAC-chained in several independent chains.

Every event carries `mac = HMAC(audit key, chain, seq, previous event's mac, content)`, and each
chain's last (seq, mac) is kept in its `AuditChainHead`. Anyone who edits, deletes, inserts or
reorders rows without the key breaks a chain, and `app.services.audit.verification` names where.

Chains exist so that signatures do not queue behind one global lock: an event locks only its
chain's head, and keeps it locked until the caller's transaction commits, which is what keeps
the chain gap-free. Nothing secret is ever written here: the MyKad appears only as a keyed
digest (`subject_ref`, for filtering) and masked (`mykad_masked`, for reading).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Insert, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.crypto.keys import MacKey
from app.db import (
    CombinedStatements,
    Write,
    guarded_writes,
    insert_with_on_conflict,
    prefixed_params,
    raise_conflict,
)
from app.models import AuditChainHead, AuditEvent
from app.services.audit.event import (
    GENESIS_MAC,
    DetailValue,
    event_mac,
    mykad_digits,
    subject_ref,
)
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
# The head moves only from the (seq, mac) the event was computed on: read under its lock, or
# remembered from this process's last event on the chain (`_LAST_HEADS`), in which case a
# head another transaction has moved since matches nothing and the event is computed again.
_MOVE_HEAD = (
    update(_HEADS)
    .where(
        _HEADS.c.chain == bindparam("head_chain"),
        _HEADS.c.seq == bindparam("head_previous_seq"),
        _HEADS.c.mac == bindparam("head_previous_mac"),
    )
    .values(seq=bindparam("head_seq"), mac=bindparam("head_mac"))
    .returning(_HEADS.c.chain, _HEADS.c.seq, _HEADS.c.mac)
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
# PostgreSQL: the head's move, the event and the change's own writes (`Write`s) in one
# statement (a data-modifying WITH), all done only if the head moved. The event's parameters
# are prefixed: unprefixed ones named like a head column (chain, seq, mac) would be added to
# the UPDATE's SET.
# The event's chain, seq and mac are the head's as it moved (RETURNING): three parameters fewer
# in every write (psycopg parses a statement of over 50 parameters again on every execution).
_MOVED_HEAD = _MOVE_HEAD.cte("moved_head")
_HEAD_COLUMNS = ("chain", "seq", "mac")
_EVENT_AFTER_MOVE = (
    insert(_EVENTS)
    .from_select(
        list(EVENT_COLUMNS),
        select(
            *(
                _MOVED_HEAD.c[name]
                if name in _HEAD_COLUMNS
                else bindparam(f"event_{name}", type_=_EVENTS.c[name].type)
                for name in EVENT_COLUMNS
            )
        ).select_from(_MOVED_HEAD),
    )
    .returning(_EVENTS.c.id)
)
_TOGETHER: CombinedStatements[Insert] = CombinedStatements()


def _together(writes: Sequence[Write]) -> Insert:
    """`_EVENT_AFTER_MOVE` with `writes` in its WITH, each guarded by the head's move."""

    def build() -> Insert:
        guarded = guarded_writes(writes, _MOVED_HEAD)
        return _EVENT_AFTER_MOVE.add_cte(
            _MOVED_HEAD, *(write.cte(f"w{index}") for index, write in enumerate(guarded))
        )

    return _TOGETHER.get_or_build(
        tuple(write.statement for write in writes),
        tuple(tuple(write.params) for write in writes),
        build,
    )


# The last head this process wrote on each chain: an event whose chain no other process has
# written since needs no read of its head (see _MOVE_HEAD).
_LAST_HEADS: dict[int, tuple[int, str]] = {}
# A head read under its lock cannot have moved: a second try is the last one. More happen only
# without a transaction (each statement its own), where another process may move it between.
_WRITE_ATTEMPTS = 8

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
# the same (innermost) transaction knows the head; a savepoint is its own key, so one rolled
# back never leaves a head the database no longer has.
_HEAD_MOVED_HERE = "roamsign.audit.moved_head"


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
        self, session: Session, mac_key: MacKey, subject_key: MacKey, chains: int = DEFAULT_CHAINS
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
        together: Sequence[Write] = (),
    ) -> RecordedEvent:
        """Append one event (written at once, not flushed with the session's objects); the
        caller's commit makes it permanent. Returns what was stored.

        `together`: the writes of the change the event describes, written with it, in the
        same statement where the database allows it (a conflict of theirs is raised as
        their `Write.conflict` says)."""
        if now.tzinfo is None:
            raise ValueError("audit events need a timezone-aware time")
        occurred_at = now.astimezone(UTC)
        _check_lengths(action=action, actor=actor, target_id=target_id, outcome=outcome)
        clean_details = _checked_details(details or {})
        ref = subject_ref(self._subject_key, mykad) if mykad is not None else None
        masked = mask_mykad(mykad_digits(mykad)) if mykad is not None else None

        chain = self._chain(ref or target_id or actor)
        previous = self._known_head(chain) or self._lock_head(chain)
        for _attempt in range(_WRITE_ATTEMPTS):
            seq = previous[0] + 1
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
                mac=event_mac(
                    self._mac_key,
                    chain=chain,
                    seq=seq,
                    previous_mac=previous[1],
                    occurred_at=occurred_at,
                    action=action,
                    actor=actor,
                    subject_ref=ref,
                    mykad_masked=masked,
                    target_id=target_id,
                    outcome=outcome,
                    details=clean_details,
                ),
            )
            event_id = self._write(event, previous, together)
            if event_id is not None:
                break
            # Another transaction moved the head since this process last did.
            previous = self._lock_head(chain)
        else:
            raise RuntimeError(f"audit chain {chain}: its head kept moving")
        self._session.info[_PINNED_CHAIN] = (self._session.get_transaction(), chain)
        self._session.info[_HEAD_MOVED_HERE] = (
            self._innermost_transaction(),
            chain,
            event.seq,
            event.mac,
        )
        _LAST_HEADS[chain] = (event.seq, event.mac)
        return dataclasses.replace(event, id=event_id)

    def _write(
        self, event: RecordedEvent, previous: tuple[int, str], together: Sequence[Write]
    ) -> int | None:
        """The head's move from `previous`, the event and `together`, all or none (the head
        had moved: None). Core statements on the session's connection (its transaction): an
        event is written once and never changed, so the ORM's unit of work would only add
        cost (it was a tenth of a signature's CPU)."""
        connection = self._session.connection()
        head = {
            "head_chain": event.chain,
            "head_previous_seq": previous[0],
            "head_previous_mac": previous[1],
            "head_seq": event.seq,
            "head_mac": event.mac,
        }
        try:
            if connection.dialect.name == "postgresql":
                row = {
                    f"event_{name}": getattr(event, name)
                    for name in EVENT_COLUMNS
                    if name not in _HEAD_COLUMNS
                }
                params = row | head | prefixed_params(together)
                found: int | None = connection.execute(
                    _together(together), params
                ).scalar_one_or_none()
                return found
            if connection.execute(_MOVE_HEAD, head).first() is None:
                return None
            for write in together:
                connection.execute(write.statement, write.params)
            row = {name: getattr(event, name) for name in EVENT_COLUMNS}
            event_id: int = connection.execute(_INSERT_EVENT, row).scalar_one()
            return event_id
        except IntegrityError as error:
            raise_conflict(error, together)
            raise

    def _innermost_transaction(self) -> object:
        return self._session.get_nested_transaction() or self._session.get_transaction()

    def _chain(self, partition_key: str) -> int:
        transaction = self._session.get_transaction()
        pinned = self._session.info.get(_PINNED_CHAIN)
        if transaction is not None and pinned is not None and pinned[0] is transaction:
            chain: int = pinned[1]
            return chain
        return chain_for(partition_key, self._chains)

    def _known_head(self, chain: int) -> tuple[int, str] | None:
        """The head as this transaction left it (it holds its lock), else as this process last
        wrote it (perhaps moved since: `_MOVE_HEAD` then matches nothing)."""
        moved = self._session.info.get(_HEAD_MOVED_HERE)
        if moved is not None and moved[0] is self._innermost_transaction() and moved[1] == chain:
            return moved[2], moved[3]
        return _LAST_HEADS.get(chain)

    def _lock_head(self, chain: int) -> tuple[int, str]:
        # Core statements, not ORM objects: the sessions keep objects across commits
        # (expire_on_commit=False), and a head read from the identity map could be stale.
        connection = self._session.connection()
        row = connection.execute(_LOCK_HEAD, {"head_chain": chain}).one_or_none()
        if row is None:
            self._create_head(chain)
            row = connection.execute(_LOCK_HEAD, {"head_chain": chain}).one()
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
