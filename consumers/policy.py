"""RetryPolicy: bounded in-process tries (tenacity), then the broker's delay tiers, then parking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from consumers.errors import Permanent

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How hard a consumer tries before parking a message.

    `attempts` in-process tries with exponential backoff and jitter (`first_delay` doubling up to
    `max_delay` seconds); still failing, the message goes to the next delay tier
    (`NAME.retry.<s>s`, whole seconds) and comes back later; after the last tier it is parked.
    Only exceptions that are instances of `retry_on` are retried; any other exception, and every
    `Permanent`, parks the message at once. Each try of the handler (with its transaction) may take at
    most `handler_timeout` seconds (`None`: no limit); past it the try is cancelled, rolled back and
    counts as a failure, so one hung handler cannot stop the consumer.
    """

    attempts: int = 3
    first_delay: float = 0.2
    max_delay: float = 2.0
    tiers: tuple[int, ...] = (5, 30, 120, 600)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    handler_timeout: float | None = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy attempts={self.attempts!r} must be at least 1; try 3.")
        if self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError(f"RetryPolicy delays first_delay={self.first_delay!r}, "
                             f"max_delay={self.max_delay!r} need 0 <= first_delay <= max_delay.")
        bad = [t for t in self.tiers if isinstance(t, bool) or not isinstance(t, int) or t < 1]
        if bad:
            raise ValueError(f"RetryPolicy tiers {self.tiers!r} must be whole seconds >= 1; "
                             "try (5, 30, 120, 600).")
        if self.handler_timeout is not None and not self.handler_timeout > 0:
            raise ValueError(f"RetryPolicy handler_timeout={self.handler_timeout!r} must be a number of seconds "
                             "above 0 (or None for no limit); try 60.")

    def with_tiers(self, tiers: tuple[int, ...]) -> RetryPolicy:
        """The same policy with other delay tiers (CONSUMER_RETRY_DELAYS)."""
        return replace(self, tiers=tuple(tiers))

    def with_handler_timeout(self, seconds: float | None) -> RetryPolicy:
        """The same policy with another handler time limit (CONSUMER_HANDLER_TIMEOUT_SECONDS); None keeps it."""
        return self if seconds is None else replace(self, handler_timeout=seconds)

    def retryable(self, exc: BaseException) -> bool:
        """Whether `exc` may be tried again (in process or through a delay tier)."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, Permanent)

    def retrying(self, sleep: Sleep = asyncio.sleep) -> AsyncRetrying:
        """A tenacity controller for one delivery; `sleep` is injectable so tests never wait."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(multiplier=self.first_delay, max=self.max_delay,
                                         jitter=self.first_delay),
            retry=retry_if_exception(self.retryable),
            sleep=sleep,
            reraise=True,
        )
