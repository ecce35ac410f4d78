"""The edge's quotas as plain objects: the frame-rate token bucket and the socket counts."""

from __future__ import annotations

import contextlib

from services.edge.limits import ConnectionLimiter, FrameRateLimit, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.1  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 60  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 5


def test_the_rate_limit_answers_the_first_drop_and_closes_a_flood() -> None:
    clock = FakeClock()
    limit = FrameRateLimit(rate=1, burst=2, close_after=3, clock=clock)
    assert limit.admit() and limit.admit()
    assert not limit.admit() and limit.first_drop and not limit.flooding
    assert not limit.admit() and not limit.first_drop
    assert not limit.admit() and limit.flooding
    clock.now += 1  # a client that slows down starts afresh
    assert limit.admit() and limit.dropped_in_a_row == 0


def test_sockets_are_counted_per_user_and_per_ip() -> None:
    limiter = ConnectionLimiter(per_user=2, per_ip=3)
    with limiter.hold(user_id="alice", ip="10.0.0.1"), limiter.hold(user_id="alice", ip="10.0.0.1"):
        assert limiter.refusal(user_id="alice", ip="10.0.0.2") is not None
        assert limiter.refusal(user_id="bob", ip="10.0.0.1") is None
        with limiter.hold(user_id="bob", ip="10.0.0.1"):
            assert limiter.ip_refusal("10.0.0.1") is not None
            assert limiter.refusal(user_id="carol", ip="10.0.0.9") is None
        assert limiter.open_sockets == 2
    assert limiter.open_sockets == 0
    assert limiter.refusal(user_id="alice", ip="10.0.0.1") is None


def test_a_limit_of_zero_means_none() -> None:
    limiter = ConnectionLimiter(per_user=0, per_ip=0)
    with contextlib.ExitStack() as held:
        for _ in range(100):
            held.enter_context(limiter.hold(user_id="alice", ip="10.0.0.1"))
        assert limiter.refusal(user_id="alice", ip="10.0.0.1") is None
