"""Rate limits counted in the database, so that every worker and every host shares them.

A limit allows at most `limit` hits per subject in any `window_seconds`. Hits are counted in
time buckets of a sixth of the window (rows of `rate_windows`); a hit counts from the start of
its bucket for one window and one bucket more, so no `window_seconds` ever holds more than
`limit` accepted hits, and a hit is forgotten between one window and one window plus a bucket
after it happened. `Retry-After` is when enough of the oldest buckets are forgotten to leave
room for one more hit. Rows are keyed by a keyed digest of the limit's name and the subject:
no MyKad, address or client name is stored.

Count before check (`hit`): every hit is counted first, refused ones too, and then compared;
the refusal (`RateLimited`, which keeps its changes) commits the count, so hammering a closed
limit keeps it closed, and two concurrent hits cannot both take the last place. That is right
for a caller's own budget (a signer's, a client address's), wrong for a limit that protects
someone from others: a flood of refusals would keep the person's limit closed for everyone.
Such a limit is taken instead (`take`): checked under the key's lock, counted only if there
is room, and reached only by a request that its caller's own limits let through.

Hot rows. Counting is an upsert of one (key, bucket, shard) row, whose row lock is held until
the request's transaction commits. An unsharded key (a person, a MyKad, an address) is also
locked as a whole for the transaction (a PostgreSQL advisory lock; SQLite has one writer
anyway), so its hits are serialised even across a bucket boundary and its count is exact:
each waits for the previous commit, then sums. That costs only the key's own requests. A
signer's limit would serialise nearly every OTP the service issues (iGFMAS makes most
requests) on one row, so it is counted on `shards` rows, a random one per hit, with no lock on
the key, and summed over the window: concurrent hits mostly lock different rows. We chose
this over counting in a separate autocommitted transaction, which needs a second connection
per request (SQLite has only one) and still queues every issuance on one row, commit by
commit. The price: a sum misses the hits that other in-flight transactions have not committed
yet, so a sharded limit can be overshot by at most the number of concurrent transactions,
which is why only limits in the hundreds or more are sharded, never a person's.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    func,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from app.crypto.keys import MacKey
from app.crypto.secrets import keyed_digest
from app.db import Write, insert_with_on_conflict, keep_changes
from app.errors import RateLimited
from app.models.rate_limit import RateWindow

_WINDOWS: Table = RateWindow.__table__  # type: ignore[assignment]
# Built once: on the OTP path building these cost more than running them.
# One more hit on a (key, bucket, shard) row, created at 1 if new.
_ROW_KEY = [_WINDOWS.c.key, _WINDOWS.c.bucket_started_at, _WINDOWS.c.shard]
_ROW_KEY_NAMES = ("key", "bucket_started_at", "shard")


def _one_more(statement: postgresql.Insert | sqlite.Insert) -> dict[str, ColumnElement[Any]]:
    """The SET of a hit's upsert: the count it would have inserted (1) added, as a column
    rather than a parameter (one bind fewer in every statement it is part of)."""
    return {"count": _WINDOWS.c.count + statement.excluded.count}


def _upsert_one(dialect: str) -> Insert:
    statement = insert_with_on_conflict(dialect, _WINDOWS)
    return statement.on_conflict_do_update(index_elements=_ROW_KEY, set_=_one_more(statement))


_UPSERTS: dict[str, Insert] = {
    dialect: _upsert_one(dialect) for dialect in ("postgresql", "sqlite")
}

BUCKETS_PER_WINDOW = 6


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` hits per subject in any `window_seconds`, counted on `shards` rows."""

    name: str  # part of every key: two limits never share a counter
    limit: int
    window_seconds: int
    shards: int = 1

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_seconds < 1 or not 1 <= self.shards <= 256:
            raise ValueError(f"rate limit {self.name}: limit, window and shards out of range")

    @property
    def bucket_seconds(self) -> int:
        return max(1, self.window_seconds // BUCKETS_PER_WINDOW)

    def bucket_start(self, now: datetime) -> datetime:
        """The start of the bucket `now` falls in (buckets are aligned on the Unix epoch)."""
        seconds = math.floor(now.timestamp())
        return datetime.fromtimestamp(seconds - seconds % self.bucket_seconds, UTC)

    def forgotten_at(self, bucket_started_at: datetime) -> datetime:
        """When the hits of a bucket stop counting: one window and one bucket after its start,
        so each hit counts for at least a whole window."""
        return bucket_started_at + timedelta(seconds=self.window_seconds + self.bucket_seconds)

    def counts_since(self, now: datetime) -> datetime:
        """Buckets that started after this instant still count at `now`."""
        return now - timedelta(seconds=self.window_seconds + self.bucket_seconds)

    def retry_after_seconds(self, buckets: Iterable[tuple[datetime, int]], now: datetime) -> int:
        """Seconds until one more hit would be within the limit, given the counted buckets
        (start, hits) at `now`: the oldest are forgotten one by one until there is room."""
        ordered = sorted(buckets)
        remaining = sum(count for _, count in ordered)
        free_at = now
        for started_at, count in ordered:
            if remaining < self.limit:
                break
            remaining -= count
            free_at = self.forgotten_at(started_at)
        return max(1, math.ceil((free_at - now).total_seconds()))


@dataclass(frozen=True)
class Hit:
    """One hit against `limit` for `subject`; `refusal` is the problem's detail if it is over."""

    limit: RateLimit
    subject: str
    refusal: str


class RateLimiter:
    """Counts hits in the caller's session (never commits; see the module's docstring)."""

    def __init__(self, session: Session, key: MacKey) -> None:
        self.session = session
        self._key = key

    def hit(self, now: datetime, *hits: Hit) -> None:
        """Count one hit against each limit, then refuse (`RateLimited`, with the longest
        `Retry-After` of the limits exceeded) if any is over; the counts survive the refusal."""
        self.hit_then_take(now, hits, None)

    def take(self, now: datetime, hit: Hit) -> None:
        """Count one hit only if there is room for it, else refuse (`RateLimited`) and count
        nothing: for a limit that someone else's refusals must never keep closed (a person's
        OTPs, refused when some signer floods them). Check before count is exact only under
        the key's lock, so an unsharded limit only."""
        write = self.hit_then_take(now, (), hit)
        assert write is not None
        self.session.connection().execute(write.statement, write.params)

    def locks(self, hits: Sequence[Hit], taken: Hit | None) -> dict[str, int]:
        """The advisory locks `hit_then_take(hits, taken)` takes first (PostgreSQL), as the
        parameters of `lock_columns`: a caller may take them in a statement of its own and
        pass them as `locked`."""
        if self.session.get_bind().dialect.name != "postgresql":
            return {}
        unsharded = [hit for hit in hits if hit.limit.shards == 1]
        if taken is not None:
            unsharded.append(taken)
        keys = sorted(
            keyed_digest(self._key, f"{hit.limit.name}:{hit.subject}") for hit in unsharded
        )
        return {f"lock_{index}": int(key[:16], 16) - 2**63 for index, key in enumerate(keys)}

    def hit_then_take(
        self,
        now: datetime,
        hits: Sequence[Hit],
        taken: Hit | None,
        *,
        locked: Mapping[str, int] | None = None,
    ) -> Write | None:
        """`hit(*hits)`, then `take(taken)`: a request its caller's own limits refuse never
        reaches the taken limit's count. Three statements whatever the number of limits: the
        unsharded keys' locks, the hits' upsert, one sum. The taken hit is returned as the
        write that counts it (None without one), for the caller to make with its change."""
        keyed = [(hit, keyed_digest(self._key, f"{hit.limit.name}:{hit.subject}")) for hit in hits]
        taken_key = None
        if taken is not None:
            if taken.limit.shards != 1:
                raise ValueError(f"rate limit {taken.limit.name}: only an unsharded limit is taken")
            taken_key = keyed_digest(self._key, f"{taken.limit.name}:{taken.subject}")
        keys = [key for _, key in keyed] + ([taken_key] if taken_key is not None else [])
        if len(set(keys)) != len(keys):
            raise ValueError("one hit per limit and subject")
        # Core statements on the session's connection: the counters are never loaded as
        # objects, and the ORM's statement handling cost more than the counting itself.
        connection = self.session.connection()
        dialect = connection.dialect.name
        # Every unsharded key's lock first, in one order in every process, then the rows (also
        # in one order): two requests never wait for each other in a cycle.
        self._serialise(connection, self.locks(hits, taken), locked)
        rows = sorted(
            (
                _row(hit.limit, key, now, shard=secrets.randbelow(hit.limit.shards))
                for hit, key in keyed
            ),
            key=lambda row: (row["key"], row["shard"]),
        )
        limits = [hit.limit for hit in hits] + ([taken.limit] if taken is not None else [])
        window: dict[str, Any] = {f"key_{index}": key for index, key in enumerate(keys)}
        window["since"] = min(limit.counts_since(now) for limit in limits)
        counted: list[Any]
        if not rows:
            counted = list(connection.execute(_counted(len(keys)), window).all())
        elif dialect == "postgresql":
            # The hits' rows as the upsert left them, and every other row of the keys' windows,
            # in one statement.
            counted = list(
                connection.execute(
                    _counted_with_hits(len(rows), len(keys)), window | _numbered(rows)
                ).all()
            )
        else:
            upsert, others = _hits_and_others(dialect, len(rows), len(keys))
            counted = list(connection.execute(upsert, _numbered(rows)).all())
            counted += connection.execute(others, window | _numbered(rows)).all()

        def buckets(limit: RateLimit, key: str) -> list[tuple[datetime, int]]:
            since = limit.counts_since(now)
            return [
                (started_at, int(count))
                for row_key, started_at, count in counted
                if row_key == key and started_at > since
            ]

        refusals = []
        for hit, key in keyed:
            counts = buckets(hit.limit, key)
            if sum(count for _, count in counts) > hit.limit.limit:
                refusals.append((hit, hit.limit.retry_after_seconds(counts, now)))
        if refusals:
            retry_after = max(seconds for _, seconds in refusals)
            keep_changes(self.session)
            raise RateLimited(refusals[0][0].refusal, retry_after_seconds=retry_after)
        if taken is None or taken_key is None:
            return None
        counts = buckets(taken.limit, taken_key)
        if sum(count for _, count in counts) >= taken.limit.limit:
            keep_changes(self.session)
            raise RateLimited(
                taken.refusal, retry_after_seconds=taken.limit.retry_after_seconds(counts, now)
            )
        return Write(_UPSERTS[dialect], _row(taken.limit, taken_key, now, shard=0))

    def _serialise(
        self, connection: Connection, locks: dict[str, int], locked: Mapping[str, int] | None
    ) -> None:
        """Hits on one unsharded key wait for each other until commit, whichever bucket they
        fall in: a bucket row's lock alone would let a hit in a new bucket sum up without one
        still in flight in the previous bucket. SQLite has one writer at a time anyway.
        `locked`: the caller took them already (they must be these)."""
        if locked is not None:
            if dict(locked) != locks:
                raise ValueError("the locks taken are not these limits'")
        elif locks:
            connection.execute(select(*lock_columns(len(locks))), locks)


def _row(limit: RateLimit, key: str, now: datetime, *, shard: int) -> dict[str, Any]:
    bucket_started_at = limit.bucket_start(now)
    return {
        "key": key,
        "bucket_started_at": bucket_started_at,
        "shard": shard if limit.shards > 1 else 0,
        "count": 1,
        "expires_at": limit.forgotten_at(bucket_started_at),
    }


_ROW_COLUMNS = ("key", "bucket_started_at", "shard", "count", "expires_at")


def _numbered(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"r{index}_{name}": value for index, row in enumerate(rows) for name, value in row.items()
    }


@functools.cache
def _upsert(dialect: str, rows: int) -> Insert:
    """One more hit on each of `rows` (key, bucket, shard) rows, in one statement (built once
    per number of rows).

    INSERT ... SELECT over a UNION ALL of bound rows, not a multi-row VALUES: SQLAlchemy gives
    a multi-row `values([...])` no cache key, so it compiled the statement on every hit (7 %
    of a worker's CPU). Each SELECT has a WHERE: without one SQLite reads ON CONFLICT as a
    join's ON."""
    selects = [
        select(
            *(bindparam(f"r{index}_{name}", type_=_WINDOWS.c[name].type) for name in _ROW_COLUMNS)
        ).where(true())
        for index in range(rows)
    ]
    statement = insert_with_on_conflict(dialect, _WINDOWS)
    return statement.from_select(
        list(_ROW_COLUMNS), selects[0] if rows == 1 else union_all(*selects)
    ).on_conflict_do_update(index_elements=_ROW_KEY, set_=_one_more(statement))


@functools.cache
def _counted(keys: int) -> Select[Any]:
    """The hits of `keys` keys (parameters `key_<index>`) since `since`, by key and bucket.
    One bound parameter per key, not an expanding list: that is rendered into the statement's
    text at every execution."""
    return (
        select(_WINDOWS.c.key, _WINDOWS.c.bucket_started_at, func.sum(_WINDOWS.c.count))
        .where(
            _WINDOWS.c.key.in_([bindparam(f"key_{index}") for index in range(keys)]),
            _WINDOWS.c.bucket_started_at > bindparam("since"),
        )
        .group_by(_WINDOWS.c.key, _WINDOWS.c.bucket_started_at)
    )


@functools.cache
def _hits_and_others(dialect: str, rows: int, keys: int) -> tuple[Insert, Executable]:
    """One more hit on each of `rows` rows, returning them as they now are; and the sum of
    every other row of the keys' windows. Both are a hit's count: its rows and the others."""
    upsert = _upsert(dialect, rows).returning(
        _WINDOWS.c.key, _WINDOWS.c.bucket_started_at, _WINDOWS.c.count
    )
    hit_rows = [
        and_(*(_WINDOWS.c[name] == bindparam(f"r{index}_{name}") for name in _ROW_KEY_NAMES))
        for index in range(rows)
    ]
    others = _counted(keys).where(not_(or_(*hit_rows)))
    return upsert, others


@functools.cache
def _counted_with_hits(rows: int, keys: int) -> Executable:
    """PostgreSQL: `_hits_and_others` in one statement (the upsert in its WITH; the other rows
    read as they were before it, which is all the upsert changed)."""
    upsert, others = _hits_and_others("postgresql", rows, keys)
    hits = upsert.cte("hits")
    return union_all(
        cast(Select[Any], others), select(hits.c.key, hits.c.bucket_started_at, hits.c.count)
    )


@functools.cache
def lock_columns(keys: int) -> tuple[ColumnElement[Any], ...]:
    """The transaction-scoped advisory locks of `keys` keys (`RateLimiter.locks` gives their
    parameters), taken in their order as a select list (PostgreSQL evaluates it left to
    right) of one statement, for each row it returns."""
    return tuple(func.pg_advisory_xact_lock(bindparam(f"lock_{index}")) for index in range(keys))
