"""The consumer process's garbage collector settings."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from consumers.tuning import GC_THRESHOLD, tune_process


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's default (another test may have run the command already)
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_process_is_tuned_for_short_lived_events(collector: None) -> None:
    assert gc.get_threshold() != GC_THRESHOLD
    tune_process()
    assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_freeze_count() > 0  # what start-up created is out of every later collection


def test_the_consumer_command_tunes_the_process_before_its_loop_starts(
        collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers import cli
    from consumers.services.inventory import inventory
    from consumers.settings import ConsumerSettings

    seen: list[tuple[int, int, int]] = []

    async def serve(*_args: object, **_kwargs: object) -> None:
        seen.append(gc.get_threshold())

    monkeypatch.setattr("consumers.runner.serve", serve)
    monkeypatch.setattr("gateway.logs.setup", lambda _level: None)  # leave this session's logging alone
    policy = asyncio.get_event_loop_policy()
    try:
        assert cli.run(inventory, ConsumerSettings(http_port=0), environ={}) == 0
    finally:
        asyncio.set_event_loop_policy(policy)  # run() installs uvloop's
    assert seen == [GC_THRESHOLD]
