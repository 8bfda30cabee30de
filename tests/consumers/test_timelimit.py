"""The handler time limit's one timer: tries cut at their own deadline, other cancels left alone."""

from __future__ import annotations

import asyncio

import pytest

from consumers.timelimit import TimeLimit


class Expired(Exception):
    pass


async def limited(limit: TimeLimit, attempt: asyncio.Future[str] | asyncio.Event) -> str:
    """A try as Delivery runs one."""
    token = limit.enter()
    try:
        if isinstance(attempt, asyncio.Event):
            await attempt.wait()
            return "done"
        return await attempt
    except asyncio.CancelledError:
        if limit.expired(token):
            raise Expired from None
        raise
    finally:
        limit.leave(token)


async def test_a_try_past_its_deadline_is_cut_and_the_cancel_is_taken_back() -> None:
    limit = TimeLimit(0.02)
    task = asyncio.ensure_future(limited(limit, asyncio.Event()))
    with pytest.raises(Expired):
        await task
    assert task.cancelling() == 0  # taken back: the task is not left half-cancelled
    assert not limit._deadlines and not limit._expired


async def test_a_try_that_finishes_in_time_is_not_cut() -> None:
    limit = TimeLimit(5)
    done = asyncio.Event()
    done.set()
    assert await limited(limit, done) == "done"
    assert not limit._deadlines


async def test_a_later_try_is_cut_at_its_own_deadline_after_the_timer_was_armed_for_an_earlier_one() -> None:
    limit = TimeLimit(0.05)
    loop = asyncio.get_running_loop()
    quick: asyncio.Future[str] = loop.create_future()
    first = asyncio.ensure_future(limited(limit, quick))  # arms the one timer
    await asyncio.sleep(0)
    hung = asyncio.Event()
    started = loop.time()
    second = asyncio.ensure_future(limited(limit, hung))  # no timer of its own
    await asyncio.sleep(0)
    quick.set_result("quick")
    assert await first == "quick"
    with pytest.raises(Expired):
        await second  # the timer fired for the first, found it gone, and waited for the second
    assert loop.time() - started >= 0.05


async def test_only_the_tries_past_their_deadline_are_cut() -> None:
    limit = TimeLimit(0.05)
    old = asyncio.ensure_future(limited(limit, asyncio.Event()))
    await asyncio.sleep(0.03)
    release = asyncio.Event()
    young = asyncio.ensure_future(limited(limit, release))
    with pytest.raises(Expired):
        await old
    assert not young.done()  # 0.03 s younger: still within its limit when the first was cut
    release.set()
    assert await young == "done"


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    limit = TimeLimit(5)
    task = asyncio.ensure_future(limited(limit, asyncio.Event()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not limit._deadlines and not limit._expired


async def test_a_cancel_from_elsewhere_at_the_deadline_stays_a_cancel() -> None:
    limit = TimeLimit(0.02)
    task = asyncio.ensure_future(limited(limit, asyncio.Event()))
    await asyncio.sleep(0)
    for deadline_task in list(limit._deadlines):  # the deadline passes and the pod stops, in one pass
        limit._deadlines[deadline_task] = 0.0
    limit._fire()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_limit_costs_nothing_and_cuts_nothing() -> None:
    limit = TimeLimit(None)
    done = asyncio.Event()
    done.set()
    assert await limited(limit, done) == "done"
    assert limit._timer is None and not limit._deadlines


def test_the_timer_is_armed_again_on_a_new_event_loop() -> None:
    limit = TimeLimit(0.02)
    for _ in range(2):  # a timer left on the first (closed) loop must not stop the second's from firing
        with pytest.raises(Expired):
            asyncio.run(limited(limit, asyncio.Event()))
