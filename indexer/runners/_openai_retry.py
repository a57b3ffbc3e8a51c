"""The API backend's retry policy: which failed requests are sent again, and after how long.

One `RetryPolicy` serves every request of a runner; each request keeps its own count in `Retries`.
Failures that are the server's (5xx, timeouts, dropped connections, unusable answers) are sent again
up to `max_retries` times, with exponential backoff and jitter. Rate limits are waited out without
using up a retry, up to `max_rate_limit_wait` seconds a request. A server's Retry-After replaces the
backoff, honoured up to `backoff_max` a wait.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ._openai_answers import Outcome

__all__ = ["Decision", "Retries", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    max_rate_limit_wait: float = 3600.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """The wait before the `attempt`-th retry: doubling from backoff_base up to backoff_max, then
        jittered down by up to half, so that requests that failed together do not come back together."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return float(delay * self.rng.uniform(0.5, 1.0))

    def honoured(self, retry_after: float | None) -> float | None:
        """How long a server's Retry-After is waited: as asked, up to backoff_max."""
        # One that asks for a day (or sends garbage) must not hang the sync, or stop every request with it.
        return None if retry_after is None else min(retry_after, self.backoff_max)

    def start(self) -> Retries:
        """The count of a new request."""
        return Retries(self)


@dataclass(frozen=True)
class Decision:
    delay: float | None  # seconds to wait before sending again; None: give up
    note: str = ""  # why a rate limit is not waited out, to add to the error

    @property
    def gives_up(self) -> bool:
        return self.delay is None


class Retries:
    """One request's retries so far, and what its next failure means."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0  # the server's failures, each one against max_retries
        self.rate_limits = 0
        self.rate_limit_wait = 0.0  # what rate limits have made this request wait

    def after(self, outcome: Outcome, retry_after: float | None) -> Decision:
        """Send again, and when, or give up, after an answer of a retryable `outcome`; `retry_after`:
        what the server asked, if it did."""
        if outcome is Outcome.RATE_LIMITED:
            return self._after_rate_limit(retry_after)
        if not outcome.retryable:
            raise ValueError(f"a request that ended {outcome.value!r} is not sent again")
        self.failures += 1
        if self.failures > self.policy.max_retries:
            return Decision(None)
        wait = self.policy.honoured(retry_after)
        return Decision(wait if wait is not None else self.policy.backoff(self.failures))

    def _after_rate_limit(self, asked: float | None) -> Decision:
        p = self.policy
        self.rate_limits += 1
        wait = p.honoured(asked)
        delay = wait if wait is not None else p.backoff(self.rate_limits)
        self.rate_limit_wait += delay
        if asked is not None and self.rate_limit_wait - delay + asked > p.max_rate_limit_wait:
            # It asks for longer than this sync waits for a rate limit in all: give up now.
            return Decision(None, f"; Retry-After {asked:g} s is beyond the {p.max_rate_limit_wait:g} s "
                                  "a sync waits for a rate limit")
        if self.rate_limit_wait <= p.max_rate_limit_wait:
            return Decision(delay)
        return Decision(None)
