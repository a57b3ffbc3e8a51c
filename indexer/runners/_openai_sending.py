"""Sending requests to the embeddings API: through the limiter and the `openai` client, the answer
read into an `Outcome`, and sent again for as long as the retry policy says.

The client's own retries are off (max_retries=0): retries, Retry-After handling, limiter feedback and
counting are done here, so that every try goes through the limiter and is counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ._openai_answers import Answer, Outcome, announced_limits, read_answer, read_error
from ._openai_packing import Item
from ._openai_retry import Retries, RetryPolicy
from ._openai_stats import ApiStats
from ._ratelimit import RateLimiter

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["Sender"]


class Sender:
    """Sends one request's inputs for a model. Made, used and closed on the runner's event loop."""

    def __init__(self, *, url: str, key: str, model: str, dimensions: int | None, timeout: float,
                 limiter: RateLimiter, policy: RetryPolicy, stats: ApiStats, adopt_limits: bool,
                 scrub: Callable[[str], str]) -> None:
        import openai

        self.client: AsyncOpenAI = openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=0,
                                                      timeout=timeout)
        self.model = model
        self.dimensions = dimensions
        self.timeout = timeout
        self.limiter = limiter
        self.policy = policy
        self.stats = stats
        self.adopt_limits = adopt_limits  # the limits the server announces (no --rpm / --tpm given)
        self.scrub = scrub
        self.encoding: Literal["base64", "float"] = "base64"
        self.dim = dimensions or 0  # what every vector must have (0: any, until the start-up probe)

    async def close(self) -> None:
        await self.client.close()

    async def send(self, batch: list[Item], retries: Retries) -> Answer:
        """The answer to act on: OK, a refusal, or the failure the retry policy gave up on (its outcome
        is then a retryable one)."""
        while True:
            answer = await self.send_once(batch)
            if not answer.outcome.retryable:
                return answer
            decision = retries.after(answer.outcome, answer.retry_after)
            if decision.delay is None:
                return dataclasses.replace(answer, message=answer.message + decision.note)
            self.stats.retries += 1
            await asyncio.sleep(decision.delay)

    async def send_once(self, batch: list[Item]) -> Answer:
        """One request, when the limiter lets it go; its answer counted and fed back to the limiter."""
        s = self.stats
        s.first_send = s.first_send or time.monotonic()  # from the first ask: waits count
        ticket = await self.limiter.acquire(sum(it.tokens for it in batch))
        s.limiter_wait_s = self.limiter.waited_s
        s.requests += 1
        answer: Answer | None = None
        try:
            answer = await self._post(batch)
        finally:
            server_tokens = answer.server_tokens if answer is not None else None
            self.limiter.release(ticket, server_tokens)
            tokens = server_tokens if server_tokens is not None else ticket.reserved
            s.tokens_sent += tokens
            s.last_answer = time.monotonic()
        if answer.headers is not None and self.adopt_limits:
            rpm, tpm = announced_limits(answer.headers)
            if rpm or tpm:
                self.limiter.set_limits(rpm, tpm)
        s.count(answer.outcome)
        if answer.outcome is Outcome.RATE_LIMITED:
            self.limiter.rate_limited(self.policy.honoured(answer.retry_after))
        elif answer.outcome is Outcome.OK:
            s.inputs_embedded += len(batch)
            s.tokens_embedded += tokens
        return answer

    async def _post(self, batch: list[Item]) -> Answer:
        """The HTTP call, and its answer read."""
        kwargs: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
        try:
            raw = await self.client.embeddings.with_raw_response.create(
                model=self.model, input=[it.text for it in batch], encoding_format=self.encoding, **kwargs)
            headers, content = raw.headers, raw.content
        except Exception as exc:
            return read_error(exc, self.timeout, self.scrub)
        return read_answer(content, headers, len(batch), self.dim)
