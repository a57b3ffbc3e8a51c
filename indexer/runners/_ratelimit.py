"""The API backend's limiter: one token bucket over requests per minute, one over tokens per minute, and
a cap on requests in flight, shared by every task of a runner (they all run on one asyncio loop).

Buckets are strict: a request leaves only when each bucket holds its cost, so over any interval the
limiter sends at most (rate x interval + what the bucket held) and never runs a debt. A bucket holds at
most one minute's worth and starts empty: the limiter cannot know what the account spent in the last
minute (another sync, another program), so it never assumes burst credit it may not have. The first
request waits for its own cost; after that the rate is the configured one.

Tokens are booked as the server counts them: a request reserves its estimate scaled by the learned ratio
of the server's `usage.prompt_tokens` to the estimate, and the booking is corrected to the reported
count when the answer arrives.

After a 429 the limiter slows down: every rate and the in-flight cap are multiplied by a factor that
drops to 0.7 of its value (at most once per second, so a volley of 429s counts once) and climbs back
to 1 linearly over `recover_s`; and when the server said when to come back (Retry-After,
retry-after-ms) nothing at all is sent before then.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter", "Ticket"]


class _Bucket:
    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = float(per_minute)
        self.level = 0.0
        self.t = now

    @property
    def cap(self) -> float:
        return self.per_minute

    def refill(self, now: float, factor: float) -> None:
        self.level = min(self.cap, self.level + (now - self.t) * self.per_minute / 60.0 * factor)
        self.t = now

    def wait(self, amount: float, factor: float) -> float:
        """Seconds until the bucket holds `amount` (or is full, for an amount over its size)."""
        need = min(amount, self.cap) - self.level
        return 0.0 if need <= 0 else need / (self.per_minute / 60.0 * factor)


@dataclass
class Ticket:
    estimate: int
    reserved: int


class RateLimiter:
    def __init__(self, rpm: float | None, tpm: float | None, concurrency: int, *,
                 recover_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.concurrency = concurrency
        self.recover_s = recover_s
        now = clock()
        self.requests = _Bucket(rpm, now) if rpm else None
        self.tokens = _Bucket(tpm, now) if tpm else None
        self.in_flight = 0
        self.blocked_until = 0.0
        self.waited_s = 0.0  # time requests spent waiting for the limiter
        self._cut_factor = 1.0
        self._cut_at = -math.inf
        self._est_sum = 0
        self._actual_sum = 0
        self._lock = asyncio.Lock()  # FIFO: requests leave in the order they asked
        self._freed = asyncio.Event()

    # -- what the limiter knows ------------------------------------------------------------------

    @property
    def factor(self) -> float:
        since = self.clock() - self._cut_at
        return min(1.0, self._cut_factor + (1.0 - self._cut_factor) * since / self.recover_s)

    @property
    def window(self) -> int:
        return max(1, int(self.concurrency * self.factor))

    @property
    def ratio(self) -> float:
        """Server-counted tokens per estimated token, learned from the answers' usage (1 until known)."""
        if self._est_sum == 0 or self._actual_sum == 0:
            return 1.0
        return min(4.0, max(0.05, self._actual_sum / self._est_sum))

    def set_limits(self, rpm: float | None, tpm: float | None) -> None:
        """Adopt limits learned from the server's x-ratelimit-limit-* headers."""
        now = self.clock()
        for name, value in (("requests", rpm), ("tokens", tpm)):
            if not value:
                continue
            bucket = getattr(self, name)
            if bucket is None:
                setattr(self, name, _Bucket(value, now))
            elif bucket.per_minute != value:
                bucket.refill(now, self.factor)
                bucket.per_minute = float(value)
                bucket.level = min(bucket.level, bucket.cap)

    def max_request_tokens(self) -> float:
        """The largest request worth packing for the token bucket, in server tokens: two seconds of the
        token rate, but at least four times the tokens per request that the request rate needs to
        reach the token rate, and never more than the bucket holds."""
        if self.tokens is None:
            return math.inf
        t = self.tokens.per_minute
        floor = 4 * t / self.requests.per_minute if self.requests is not None else 0.0
        return min(t, max(t / 30.0, floor))

    # -- the flow --------------------------------------------------------------------------------

    async def acquire(self, estimate: int) -> Ticket:
        reserved = max(1, math.ceil(estimate * self.ratio))
        t0 = self.clock()
        async with self._lock:
            while True:
                now = self.clock()
                if now < self.blocked_until:
                    await asyncio.sleep(self.blocked_until - now)
                    continue
                if self.in_flight >= self.window:
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                factor = self.factor
                wait = 0.0
                for bucket, amount in ((self.requests, 1), (self.tokens, reserved)):
                    if bucket is not None:
                        bucket.refill(now, factor)
                        wait = max(wait, bucket.wait(amount, factor))
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if self.requests is not None:
                    self.requests.level -= 1
                if self.tokens is not None:
                    self.tokens.level -= reserved
                self.in_flight += 1
                self.waited_s += self.clock() - t0
                return Ticket(estimate, reserved)

    def release(self, ticket: Ticket, server_tokens: int | None) -> None:
        """The request is over. `server_tokens`: what the server said it counted (None: unknown)."""
        self.in_flight -= 1
        self._freed.set()
        if server_tokens is None:
            return
        self._est_sum += ticket.estimate
        self._actual_sum += server_tokens
        if self.tokens is not None:
            self.tokens.level = min(self.tokens.cap, self.tokens.level + ticket.reserved - server_tokens)

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: slow down, and send nothing before the server's Retry-After."""
        now = self.clock()
        if now - self._cut_at >= 1.0:
            self._cut_factor = max(0.1, 0.7 * self.factor)
            self._cut_at = now
        if retry_after is not None:
            self.blocked_until = max(self.blocked_until, now + retry_after)
