"""RetryPolicy as a value: tries, backoff bounds, what is retryable."""

from __future__ import annotations

import pytest

from consumers import Permanent, RetryPolicy


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def run(policy: RetryPolicy, errors: list[BaseException], sleep: Recorder) -> int:
    calls = 0
    async for attempt in policy.retrying(sleep):
        with attempt:
            calls += 1
            if errors:
                raise errors.pop(0)
    return calls


async def test_transient_errors_are_tried_again_with_growing_capped_delays() -> None:
    sleep = Recorder()
    policy = RetryPolicy(attempts=4, first_delay=0.5, max_delay=1.2)
    assert await run(policy, [OSError("a"), OSError("b"), OSError("c")], sleep) == 4
    assert len(sleep.delays) == 3
    assert 0.5 <= sleep.delays[0] <= 1.0
    assert all(d <= 1.2 for d in sleep.delays)


async def test_the_last_error_is_raised_after_the_attempts() -> None:
    sleep = Recorder()
    with pytest.raises(OSError, match="third"):
        await run(RetryPolicy(attempts=3), [OSError("1"), OSError("2"), OSError("third")], sleep)
    assert len(sleep.delays) == 2


async def test_permanent_is_never_retried() -> None:
    sleep = Recorder()
    with pytest.raises(Permanent):
        await run(RetryPolicy(attempts=5), [Permanent("no")], sleep)
    assert sleep.delays == []


async def test_only_retry_on_types_are_retried() -> None:
    sleep = Recorder()
    policy = RetryPolicy(attempts=5, retry_on=(OSError,))
    with pytest.raises(KeyError):
        await run(policy, [KeyError("k")], sleep)
    assert sleep.delays == []
    assert policy.retryable(TimeoutError()) and not policy.retryable(KeyError())


def test_with_tiers_replaces_only_the_tiers() -> None:
    policy = RetryPolicy(attempts=2, tiers=(10, 60))
    assert policy.with_tiers((1, 2)) == RetryPolicy(attempts=2, tiers=(1, 2))


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"tiers": (0,)}, {"tiers": (1.5,)},
                                    {"first_delay": 3.0, "max_delay": 1.0}])
def test_bad_policies_say_what_to_use(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"try|need"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
