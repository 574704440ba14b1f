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

import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Table, bindparam, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from app.crypto.keys import MacKey
from app.crypto.secrets import keyed_digest
from app.db import insert_with_on_conflict, keep_changes
from app.errors import RateLimited
from app.models.rate_limit import RateWindow

_WINDOWS: Table = RateWindow.__table__  # type: ignore[assignment]
# Built once: on the OTP path building these cost more than running them.
_COUNTED = (
    select(_WINDOWS.c.key, _WINDOWS.c.bucket_started_at, func.sum(_WINDOWS.c.count))
    .where(
        _WINDOWS.c.key.in_(bindparam("keys", expanding=True)),
        _WINDOWS.c.bucket_started_at > bindparam("since"),
    )
    .group_by(_WINDOWS.c.key, _WINDOWS.c.bucket_started_at)
)
# One more hit on a (key, bucket, shard) row, created at 1 if new.
_ROW_KEY = [_WINDOWS.c.key, _WINDOWS.c.bucket_started_at, _WINDOWS.c.shard]
_ONE_MORE = {"count": _WINDOWS.c.count + 1}
_UPSERTS: dict[str, Executable] = {
    dialect: insert_with_on_conflict(dialect, _WINDOWS).on_conflict_do_update(
        index_elements=_ROW_KEY, set_=_ONE_MORE
    )
    for dialect in ("postgresql", "sqlite")
}
# A transaction-scoped PostgreSQL advisory lock on 64 bits of a key's digest.
_LOCK_KEY = select(func.pg_advisory_xact_lock(bindparam("lock_id")))

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
        keyed = [(hit, keyed_digest(self._key, f"{hit.limit.name}:{hit.subject}")) for hit in hits]
        if len({key for _, key in keyed}) != len(keyed):
            raise ValueError("one hit per limit and subject")
        rows = [
            {
                "key": key,
                "bucket_started_at": hit.limit.bucket_start(now),
                "shard": secrets.randbelow(hit.limit.shards) if hit.limit.shards > 1 else 0,
                "count": 1,
                "expires_at": hit.limit.forgotten_at(hit.limit.bucket_start(now)),
            }
            for hit, key in keyed
        ]
        # One lock order in every process, so two requests never wait for each other's rows.
        rows.sort(key=lambda row: (row["key"], row["shard"]))
        # Core statements on the session's connection: the counters are never loaded as
        # objects, and the ORM's statement handling cost more than the counting itself.
        connection = self.session.connection()
        self._serialise(connection, sorted(key for hit, key in keyed if hit.limit.shards == 1))
        # Executed once per row, in that order (a prebuilt one-row upsert; executemany).
        connection.execute(_UPSERTS[connection.dialect.name], rows)
        counted = connection.execute(
            _COUNTED,
            {
                "keys": [key for _, key in keyed],
                "since": min(hit.limit.counts_since(now) for hit in hits),
            },
        ).all()
        refusals = []
        for hit, key in keyed:
            since = hit.limit.counts_since(now)
            buckets = [
                (started_at, int(count))
                for row_key, started_at, count in counted
                if row_key == key and started_at > since
            ]
            if sum(count for _, count in buckets) > hit.limit.limit:
                refusals.append((hit, hit.limit.retry_after_seconds(buckets, now)))
        if refusals:
            retry_after = max(seconds for _, seconds in refusals)
            keep_changes(self.session)
            raise RateLimited(refusals[0][0].refusal, retry_after_seconds=retry_after)

    def take(self, now: datetime, hit: Hit) -> None:
        """Count one hit only if there is room for it, else refuse (`RateLimited`) and count
        nothing: for a limit that someone else's refusals must never keep closed (a person's
        OTPs, refused when some signer floods them). Check before count is exact only under
        the key's lock, so an unsharded limit only. Call it after `hit` for the caller's own
        limits: every process takes its locks in that order, and a request refused by those
        never reaches this count."""
        if hit.limit.shards != 1:
            raise ValueError(f"rate limit {hit.limit.name}: only an unsharded limit is taken")
        key = keyed_digest(self._key, f"{hit.limit.name}:{hit.subject}")
        connection = self.session.connection()
        self._serialise(connection, [key])
        since = hit.limit.counts_since(now)
        buckets = [
            (started_at, int(count))
            for _key, started_at, count in connection.execute(
                _COUNTED, {"keys": [key], "since": since}
            )
            if started_at > since
        ]
        if sum(count for _, count in buckets) >= hit.limit.limit:
            keep_changes(self.session)
            raise RateLimited(
                hit.refusal,
                retry_after_seconds=hit.limit.retry_after_seconds(buckets, now),
            )
        bucket_started_at = hit.limit.bucket_start(now)
        connection.execute(
            _UPSERTS[connection.dialect.name],
            [
                {
                    "key": key,
                    "bucket_started_at": bucket_started_at,
                    "shard": 0,
                    "count": 1,
                    "expires_at": hit.limit.forgotten_at(bucket_started_at),
                }
            ],
        )

    def _serialise(self, connection: Connection, keys: list[str]) -> None:
        """Hits on one unsharded key wait for each other until commit, whichever bucket they
        fall in: a bucket row's lock alone would let a hit in a new bucket sum up without one
        still in flight in the previous bucket. SQLite has one writer at a time anyway."""
        if connection.dialect.name != "postgresql":
            return
        for key in keys:
            connection.execute(_LOCK_KEY, {"lock_id": int(key[:16], 16) - 2**63})
