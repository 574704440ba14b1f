"""The rate limiter on a real database: counted before checked, counts that survive the
refusal, shards summed, keys that reveal no subject."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.crypto.secrets import keyed_digest
from app.db import unit_of_work
from app.errors import RateLimited
from app.models import RateWindow
from app.services.rate_limits import Hit, RateLimit, RateLimiter

PERSON = RateLimit("test:person", limit=3, window_seconds=60)
SIGNER = RateLimit("test:signer", limit=8, window_seconds=60, shards=4)
MYKAD = "850101145555"


def hit(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, *hits: Hit
) -> int | None:
    """One unit of work counting `hits`: None if accepted, else the Retry-After."""
    try:
        with unit_of_work(sessions) as session:
            RateLimiter(session, keys.subject_ref).hit(clock.now(), *hits)
    except RateLimited as refusal:
        return refusal.retry_after_seconds
    return None


def counted(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.coalesce(func.sum(RateWindow.count), 0))) or 0


def test_over_the_limit_is_refused_the_refusals_are_counted_and_the_window_rolls_over(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    person = Hit(PERSON, MYKAD, "too many for this person")
    assert [hit(sessions, keys, clock, person) for _ in range(3)] == [None, None, None]
    clock.advance(25)
    # Refused, and counted although refused (committed with the refusal): 10:01:10 frees one.
    assert hit(sessions, keys, clock, person) == 45
    assert hit(sessions, keys, clock, person) == 45
    assert counted(sessions) == 5
    clock.advance(44)
    # 10:01:09: the first three are forgotten in a second, but the two refusals at 10:00:25
    # (with this one, three) keep the limit closed until 10:01:30.
    assert hit(sessions, keys, clock, person) == 21
    clock.advance(21)
    assert hit(sessions, keys, clock, person) is None
    assert counted(sessions) == 7
    # Another subject, and the same subject under another limit, have their own counts.
    assert hit(sessions, keys, clock, Hit(PERSON, "900101145555", "")) is None
    assert hit(sessions, keys, clock, Hit(SIGNER, MYKAD, "")) is None


def test_each_limit_is_counted_and_the_longest_wait_is_answered(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    signer_hits = [Hit(SIGNER, "igfmas", "too many for this signer")]
    for i in range(8):
        person = Hit(PERSON, f"person-{i}", "too many for this person")
        assert hit(sessions, keys, clock, person, *signer_hits) is None
        clock.advance(5)
    # 10:00:40: the signer is over (its first bucket is forgotten at 10:01:10), this person is
    # not, yet the person's hit is counted as well.
    try:
        with unit_of_work(sessions) as session:
            RateLimiter(session, keys.subject_ref).hit(
                clock.now(), Hit(PERSON, "person-8", "person"), *signer_hits
            )
    except RateLimited as refusal:
        assert (refusal.detail, refusal.retry_after_seconds) == ("too many for this signer", 30)
    else:
        pytest.fail("the signer's ninth hit was accepted")
    with sessions() as session:
        stored = set(session.scalars(select(RateWindow.key)))
    # Keyed digests of limit and subject: the table names no one.
    subjects = [("test:signer", "igfmas")] + [("test:person", f"person-{i}") for i in range(9)]
    assert stored == {keyed_digest(keys.subject_ref, f"{n}:{s}") for n, s in subjects}
    assert counted(sessions) == 8 + 8 + 2


def test_a_sharded_count_is_the_sum_of_its_shards(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    signer = Hit(SIGNER, "igfmas", "too many for this signer")
    assert all(hit(sessions, keys, clock, signer) is None for _ in range(8))
    assert hit(sessions, keys, clock, signer) == 70
    with sessions() as session:
        shards = session.execute(
            select(RateWindow.shard, RateWindow.count).order_by(RateWindow.shard)
        ).all()
    assert {shard for shard, _ in shards} <= {0, 1, 2, 3}
    assert sum(count for _, count in shards) == 9


@pytest.mark.postgres_only
def test_a_hit_in_a_new_bucket_waits_for_one_in_flight_in_the_previous_bucket(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    one = RateLimit("test:one", limit=1, window_seconds=60)
    held = sessions()
    RateLimiter(held, keys.subject_ref).hit(clock.now() + timedelta(seconds=9.9), Hit(one, "p", ""))
    outcome: list[int | None] = []
    later = FrozenClock(clock.now() + timedelta(seconds=10))  # the next bucket
    other = threading.Thread(
        target=lambda: outcome.append(hit(sessions, keys, later, Hit(one, "p", "")))
    )
    other.start()
    deadline = time.monotonic() + 10
    while other.is_alive() and not waiting_for_a_lock(sessions) and time.monotonic() < deadline:
        time.sleep(0.01)
    held.commit()
    held.close()
    other.join(timeout=10)
    # Not counted without the first hit: refused once it is committed.
    assert outcome == [70]


def waiting_for_a_lock(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return bool(
            session.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        )


def take(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, one: Hit
) -> int | None:
    """One unit of work taking `one`: None if accepted, else the Retry-After."""
    try:
        with unit_of_work(sessions) as session:
            RateLimiter(session, keys.subject_ref).take(clock.now(), one)
    except RateLimited as refusal:
        return refusal.retry_after_seconds
    return None


def test_a_taken_limit_counts_only_what_it_accepts(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    person = Hit(PERSON, MYKAD, "too many for this person")
    assert [take(sessions, keys, clock, person) for _ in range(3)] == [None, None, None]
    clock.advance(25)
    # Refused, and not counted: however many refusals, 10:01:10 frees the limit.
    assert [take(sessions, keys, clock, person) for _ in range(5)] == [45] * 5
    assert counted(sessions) == 3
    clock.advance(45)
    assert take(sessions, keys, clock, person) is None
    with pytest.raises(ValueError, match="unsharded"):
        take(sessions, keys, clock, Hit(SIGNER, MYKAD, ""))
