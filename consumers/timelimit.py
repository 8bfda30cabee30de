"""The handler time limit: one timer for every try in flight, instead of one `asyncio.timeout` per try.

A try's deadline is its start plus the limit, so tries in flight expire in the order they started; the
one timer waits for the oldest, and when it fires cancels every try past its deadline and waits for the
next. A try costs a dictionary entry, not a timer of its own (`asyncio.timeout` arms and cancels one in
the loop's heap per try: a tenth of the runner's own time per event under uvloop).
"""

from __future__ import annotations

import asyncio
from typing import Any


class TimeLimit:
    """`token = limit.enter()` as a try starts, in its task; `limit.expired(token)` in its `except
    CancelledError` (True: the cancel was the limit's, and is taken back); `limit.leave(token)` in its
    `finally`. `seconds=None`: no limit, and every call is a no-op."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # tries in flight, oldest (earliest deadline) first
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled by the limit, not yet taken back
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> tuple[asyncio.Task[Any], int] | None:
        if self.seconds is None:
            return None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)  # with the loop given it looks the loop up once, not twice
        if task is None:
            raise RuntimeError("a time-limited try runs in a task")
        deadline = loop.time() + self.seconds
        self._deadlines.pop(task, None)  # re-entered: it moves to the end, where its deadline belongs
        self._deadlines[task] = deadline
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_at(deadline, self._fire)
        return task, task.cancelling()

    def expired(self, token: tuple[asyncio.Task[Any], int] | None) -> bool:
        """In the try's `except CancelledError`: whether the limit cancelled it (and nothing else did)."""
        if token is None:
            return False
        task, cancelling = token
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    def leave(self, token: tuple[asyncio.Task[Any], int] | None) -> None:
        if token is None:
            return
        task = token[0]
        self._deadlines.pop(task, None)
        if task in self._expired:  # cancelled by the limit, but the try ended some other way
            self._expired.discard(task)
            task.uncancel()

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for task, deadline in list(self._deadlines.items()):
            if deadline > now:
                self._timer = loop.call_at(deadline, self._fire)
                return
            del self._deadlines[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
