"""Acks coalesced per channel: one `basic.ack(multiple=True)` for a run of consecutive deliveries that
settled together (a batch's COMMIT settles dozens at once), so neither this process nor the broker pays for
one ack frame per event.

Correctness rests on one rule: a multiple ack for tag N is sent only when every delivery with a tag up to N
that this channel gave us has finished — acked, or handed back by a nack of its own. A delivery that is still
being handled, or that was abandoned (its task cancelled), stays in the window and stops the run there; the
deliveries that finished behind it are acked one by one, never made to wait for it.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Protocol


class AckChannel(Protocol):
    """The part of an AMQP channel (aiormq's) the window uses."""

    def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> Awaitable[None]: ...


class AckWindow:
    """The deliveries of one channel, in delivery-tag order, until each is acked or handed back.

    `track(tag)` when a delivery arrives (in order); `await ack(tag)` (or `ack_all(tags)` for several, without a
    task to wait in) when it is done, which returns once its ack (alone or as part of a multiple ack) is written;
    `released(tag)` after a delivery was nacked or rejected on its own. Acks requested in one pass of the
    event loop go out together at its end.
    """

    def __init__(self, channel: AckChannel) -> None:
        self.channel = channel
        self._open: deque[int] = deque()  # tracked, neither acked nor released, in tag order
        self._done: dict[int, _Waiter] = {}  # finished, waiting for the flush
        self._released: set[int] = set()  # handed back on their own; the run may pass them
        self._scheduled = False
        self._sends: deque[tuple[int, bool, list[_Waiter]]] = deque()  # decided, not yet written
        self._sender: asyncio.Task[None] | None = None
        self.frames = 0  # ack frames sent (for tests and benchmarks)

    @property
    def open(self) -> int:
        return len(self._open)

    def track(self, tag: int) -> None:
        if not self._open or tag > self._open[-1]:
            self._open.append(tag)
        else:  # out of order (not seen from aiormq, which delivers in tag order): keep the window sorted
            position = bisect.bisect_left(self._open, tag)
            if position == len(self._open) or self._open[position] != tag:
                self._open.insert(position, tag)

    async def ack(self, tag: int) -> None:
        """Ack `tag` with the others done in this pass of the loop; raises what writing the ack raised."""
        await self.ack_all((tag,))

    def ack_all(self, tags: Sequence[int]) -> asyncio.Future[None]:
        """Ack several deliveries (a batch that committed) without a task to wait in: one future, completed
        once every one of their acks is written, or with what writing one of them raised."""
        waiter = _Waiter(asyncio.get_running_loop().create_future(), len(tags))
        done = self._done
        for tag in tags:
            done[tag] = waiter
        self._schedule()
        return waiter.future

    def released(self, tag: int) -> None:
        """`tag` was nacked or rejected on its own: a later multiple ack may pass it."""
        self._released.add(tag)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        run: list[_Waiter] = []
        last: int | None = None
        opened = self._open
        while opened and (opened[0] in self._done or opened[0] in self._released):
            tag = opened.popleft()
            if tag in self._released:
                self._released.discard(tag)
                continue
            run.append(self._done.pop(tag))
            last = tag
        if last is not None:
            self._sends.append((last, len(run) > 1, run))
        for tag, waiter in self._done.items():  # behind a delivery still open: one by one
            self._sends.append((tag, False, [waiter]))
            self._released.add(tag)  # acked now: the run passes it later
        self._done.clear()
        if self._sends and self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        """Write the acks in the order they were decided (one writer: a multiple ack must never overtake the
        single ack of a tag it covers, which the broker would refuse, closing the channel)."""
        sends = self._sends
        try:
            while sends:
                tag, multiple, waiters = sends[0]
                try:
                    await self.channel.basic_ack(tag, multiple=multiple)
                except Exception as exc:
                    # Not acked: the broker redelivers them once the channel is gone; the guards skip them.
                    while sends:
                        for waiter in sends.popleft()[2]:
                            if not waiter.future.done():
                                waiter.future.set_exception(exc)
                    return
                sends.popleft()
                self.frames += 1
                for waiter in waiters:
                    waiter.remaining -= 1
                    if not waiter.remaining and not waiter.future.done():
                        waiter.future.set_result(None)
        finally:
            self._sender = None


class _Waiter:
    """Who waits for one or more acks: its future completes when the last of them is written."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future, self.remaining = future, remaining
