"""The window arithmetic of the rate limits, with instants given (no database, no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services.rate_limits import RateLimit

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
PER_MINUTE = RateLimit("test", limit=5, window_seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_buckets_are_a_sixth_of_the_window_aligned_on_the_epoch() -> None:
    assert PER_MINUTE.bucket_seconds == 10
    assert RateLimit("hour", 5, 3600).bucket_seconds == 600
    assert RateLimit("tiny", 5, 3).bucket_seconds == 1
    assert PER_MINUTE.bucket_start(at(0)) == at(0)
    assert PER_MINUTE.bucket_start(at(9.999)) == at(0)
    assert PER_MINUTE.bucket_start(at(10)) == at(10)
    assert PER_MINUTE.bucket_start(at(-0.5)) == at(-10)


def test_a_hit_counts_for_a_whole_window_and_at_most_one_bucket_more() -> None:
    for offset in (0, 4.5, 9.999):
        bucket = PER_MINUTE.bucket_start(at(offset))
        lasts = PER_MINUTE.forgotten_at(bucket) - at(offset)
        assert timedelta(seconds=60) < lasts <= timedelta(seconds=70)
    # Whether a bucket still counts at `now` agrees with when it is forgotten.
    bucket = at(0)
    assert bucket > PER_MINUTE.counts_since(at(69.999))
    assert not bucket > PER_MINUTE.counts_since(at(70))


def test_retry_after_is_when_the_oldest_buckets_leave_room_for_one_more() -> None:
    # 3 at 10:00:00, 2 at 10:00:25, and now the sixth at 10:00:30: once the first bucket is
    # forgotten (10:01:10), 3 are left and a fourth fits.
    buckets = [(at(0), 3), (at(20), 2), (at(30), 1)]
    assert PER_MINUTE.retry_after_seconds(buckets, at(30)) == 40
    # Five in the last bucket alone (refused hits count too): everything must be forgotten.
    assert PER_MINUTE.retry_after_seconds([(at(0), 1), (at(30), 5)], at(35)) == 65
    # Order of the input does not matter; a fraction of a second rounds up.
    assert PER_MINUTE.retry_after_seconds([(at(30), 1), (at(0), 5)], at(30.25)) == 40


def test_retry_after_of_a_limit_of_one_and_never_below_one_second() -> None:
    one = RateLimit("one", limit=1, window_seconds=60)
    assert one.retry_after_seconds([(at(50), 2)], at(55)) == 65
    assert one.retry_after_seconds([(at(0), 1)], at(70)) == 1


@pytest.mark.parametrize(
    ("limit", "window", "shards"), [(0, 60, 1), (5, 0, 1), (5, 60, 0), (5, 60, 257)]
)
def test_nonsense_limits_are_refused(limit: int, window: int, shards: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        RateLimit("bad", limit, window, shards)
