"""What the API backend counts about its work, reported in SyncSummary.backend_stats."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ._openai_answers import Outcome

__all__ = ["ApiStats"]


@dataclass
class ApiStats:
    requests: int = 0  # HTTP requests sent, retries and bisected parts included (not the start-up probe)
    retries: int = 0  # requests sent again after a 429, 5xx, timeout, dropped connection or bad answer
    rate_limited: int = 0  # 429 answers
    server_errors: int = 0  # 5xx (and 408, 409) answers
    timeouts: int = 0
    connection_errors: int = 0  # refused or dropped connections
    bad_answers: int = 0  # wrong count, index or dimension, or non-finite values: nothing stored
    too_large: int = 0  # 413 / "batch too large": the packing shrank and the request was split
    bisections: int = 0  # 400s on a request of several inputs, split to find the bad one
    rejected_inputs: int = 0  # documents failed with the server's message
    gave_up_requests: int = 0  # requests out of retries: their documents failed this attempt
    truncated: int = 0  # inputs cut to the per-input token limit
    too_long_failed: int = 0  # inputs over the limit, failed (--no-truncate)
    inputs_embedded: int = 0
    tokens_sent: int = 0  # every request sent (the server's count when it gave one, else ours)
    tokens_embedded: int = 0  # answered requests, as the server counted them
    limiter_wait_s: float = 0.0  # time requests waited for the limiter, summed (they wait side by side)
    first_send: float = 0.0
    last_answer: float = 0.0

    def count(self, outcome: Outcome) -> None:
        """One answer of this outcome (the outcomes that have a count of their own)."""
        match outcome:
            case Outcome.RATE_LIMITED:
                self.rate_limited += 1
            case Outcome.SERVER_ERROR:
                self.server_errors += 1
            case Outcome.TIMEOUT:
                self.timeouts += 1
            case Outcome.CONNECTION_FAILED:
                self.connection_errors += 1
            case Outcome.BAD_ANSWER:
                self.bad_answers += 1
            case Outcome.TOO_LARGE:
                self.too_large += 1

    def reset(self) -> None:
        for field in fields(self):
            setattr(self, field.name, field.default)
