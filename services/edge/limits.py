"""Per-socket frame rate and per-user / per-IP socket counts: the edge's quotas, as plain
Python (no I/O), so the WebSocket handler only asks and answers."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator


class TokenBucket:
    """Allows `rate` events per second on average and up to `burst` at once."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._updated = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FrameRateLimit:
    """A socket's client frames: each takes a token; a frame without one is dropped. Dropping
    `close_after` frames in a row means the client ignores `rate_limited`: close it (4501)."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        close_after: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bucket = TokenBucket(rate, burst, clock=clock)
        self._close_after = close_after
        self.dropped_in_a_row = 0

    def admit(self) -> bool:
        if self._bucket.take():
            self.dropped_in_a_row = 0
            return True
        self.dropped_in_a_row += 1
        return False

    @property
    def first_drop(self) -> bool:
        """True for the first dropped frame of a run of drops: the one worth answering."""
        return self.dropped_in_a_row == 1

    @property
    def flooding(self) -> bool:
        return self.dropped_in_a_row >= self._close_after


class ConnectionLimiter:
    """Open sockets per user and per client IP; a limit of 0 means none."""

    def __init__(self, *, per_user: int, per_ip: int) -> None:
        self._per_user = per_user
        self._per_ip = per_ip
        self._users: Counter[str] = Counter()
        self._ips: Counter[str] = Counter()

    @property
    def open_sockets(self) -> int:
        return sum(self._ips.values())

    def ip_refusal(self, ip: str) -> str | None:
        """Why one more socket from `ip` is refused, or None."""
        if self._per_ip and self._ips[ip] >= self._per_ip:
            return f"too many open sockets from this address (limit {self._per_ip})"
        return None

    def refusal(self, *, user_id: str, ip: str) -> str | None:
        """Why one more socket for `user_id` from `ip` is refused, or None."""
        if self._per_user and self._users[user_id] >= self._per_user:
            return f"too many open sockets for this user (limit {self._per_user}); close one"
        return self.ip_refusal(ip)

    @contextlib.contextmanager
    def hold(self, *, user_id: str, ip: str) -> Iterator[None]:
        """Counts one socket while the block runs (check `refusal` first)."""
        self._users[user_id] += 1
        self._ips[ip] += 1
        try:
            yield
        finally:
            for counter, key in ((self._users, user_id), (self._ips, ip)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]


class PendingConnections:
    """Connections per client IP that have not authenticated yet: every TCP connection counts
    from its first byte until its WebSocket handshake is accepted, or until it closes. Bounds
    what one address can hold without a token (half-sent requests, idle keep-alives)."""

    def __init__(self, *, per_ip: int) -> None:
        self._per_ip = per_ip
        self._ips: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return sum(self._ips.values())

    def admit(self, ip: str) -> bool:
        """Counts one more connection from `ip`, unless that would pass the limit (0: none)."""
        if self._per_ip and self._ips[ip] >= self._per_ip:
            return False
        self._ips[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._ips[ip] -= 1
        if self._ips[ip] <= 0:
            del self._ips[ip]
