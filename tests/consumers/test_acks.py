"""AckWindow: a run of settled deliveries is one multiple ack; nothing unsettled is ever covered."""

from __future__ import annotations

import asyncio

import pytest

from consumers.acks import AckWindow


class Channel:
    """Records the ack frames in the order they are written; `hold` makes the next write wait."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bool]] = []
        self.hold: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        self.frames.append((delivery_tag, multiple))


def window(*tags: int) -> tuple[AckWindow, Channel]:
    channel = Channel()
    acks = AckWindow(channel)
    for tag in tags:
        acks.track(tag)
    return acks, channel


async def test_deliveries_settled_together_are_one_multiple_ack() -> None:
    acks, channel = window(1, 2, 3, 4)
    await asyncio.gather(*(acks.ack(tag) for tag in (3, 1, 4, 2)))
    assert channel.frames == [(4, True)]
    assert acks.open == 0


async def test_a_lone_delivery_is_acked_on_its_own() -> None:
    acks, channel = window(1)
    await acks.ack(1)
    assert channel.frames == [(1, False)]


async def test_a_delivery_still_open_stops_the_run_and_those_behind_it_are_acked_singly() -> None:
    acks, channel = window(1, 2, 3, 4)
    await asyncio.gather(acks.ack(1), acks.ack(3), acks.ack(4))  # 2 is still being handled
    assert channel.frames == [(1, False), (3, False), (4, False)]
    assert acks.open == 3  # 2, and 3 and 4 until the run passes them
    await acks.ack(2)
    assert channel.frames[-1] == (2, False)  # never a multiple ack over 3 and 4 again
    assert acks.open == 0


async def test_a_run_passes_deliveries_acked_singly_before() -> None:
    acks, channel = window(1, 2, 3, 4, 5)
    await acks.ack(3)  # behind 1 and 2: acked on its own
    await asyncio.gather(acks.ack(1), acks.ack(2), acks.ack(4))
    assert channel.frames == [(3, False), (4, True)]
    await acks.ack(5)
    assert channel.frames[-1] == (5, False)


async def test_a_delivery_handed_back_is_passed_but_never_acked() -> None:
    acks, channel = window(1, 2, 3)
    acks.released(2)  # nacked on its own
    await asyncio.gather(acks.ack(1), acks.ack(3))
    assert channel.frames == [(3, True)]


async def test_an_abandoned_delivery_is_never_covered_by_a_multiple_ack() -> None:
    """A handler task cancelled mid-delivery leaves its tag open: the broker redelivers it."""
    acks, channel = window(1, 2, 3)
    await asyncio.gather(acks.ack(1), acks.ack(3))  # 2 abandoned
    for _ in range(3):
        await asyncio.sleep(0)
    assert all(tag != 2 for tag, _ in channel.frames)
    assert not any(multiple and tag >= 2 for tag, multiple in channel.frames)


async def test_a_multiple_ack_never_overtakes_a_single_ack_written_before_it() -> None:
    """The broker closes the channel on an ack for a tag a multiple ack already took."""
    acks, channel = window(1, 2, 3)
    channel.hold = asyncio.Event()
    first = asyncio.ensure_future(acks.ack(2))  # behind 1: single ack, held on the wire
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = asyncio.ensure_future(asyncio.gather(acks.ack(1), acks.ack(3)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    channel.hold.set()
    await asyncio.gather(first, rest)
    assert channel.frames == [(2, False), (3, True)]


async def test_a_failed_write_fails_every_waiter_of_that_frame() -> None:
    acks, channel = window(1, 2)
    channel.fail = ConnectionError("channel closed")
    results = await asyncio.gather(acks.ack(1), acks.ack(2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


async def test_a_waiter_cancelled_before_the_flush_is_still_acked() -> None:
    """Cancelled after its COMMIT (e.g. the drain timed out): the ack still goes, once."""
    acks, channel = window(1, 2)
    waiter = asyncio.ensure_future(acks.ack(1))
    await asyncio.sleep(0)
    waiter.cancel()
    await acks.ack(2)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert channel.frames == [(2, True)]


def test_tracking_out_of_order_keeps_the_window_sorted() -> None:
    acks, _ = window(1, 3)
    acks.track(2)
    acks.track(2)
    assert acks.open == 3


async def test_acks_of_several_deliveries_complete_once_the_last_of_their_frames_is_written() -> None:
    """A batch's deliveries split by a delivery still open: the part before it rides a multiple ack, the
    part behind it goes singly; their one future waits for every frame."""
    acks, channel = window(1, 2, 3, 4)
    channel.hold = hold = asyncio.Event()
    together = acks.ack_all([1, 2, 4])  # 3 is still being handled
    while not acks._sends or acks._sender is None:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not together.done()
    hold.set()
    await together
    assert channel.frames == [(2, True), (4, False)]
    await acks.ack(3)
    assert channel.frames[-1] == (3, False) and acks.open == 0  # 4 went already


async def test_acks_of_several_deliveries_fail_together_when_a_frame_fails() -> None:
    acks, channel = window(1, 2, 3)
    channel.fail = ConnectionError("channel closed")
    with pytest.raises(ConnectionError):
        await acks.ack_all([1, 3])
