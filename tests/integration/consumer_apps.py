"""A consumer for process-level tests, steered through files in `PROBE_DIR`.

`PROBE_DIR/mode` holds what the handler does: `ok` (default), `fail` (OSError), `permanent`, `die`
(the process exits before acking) or `wait` (block until `PROBE_DIR/release` exists). Each call
appends one line to `PROBE_DIR/calls` (`message_id attempt source`) before acting. Applied events
are rows in table `probe_applied` of the consumer's database, written in the event's transaction.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consumers import Consumer, Event, Permanent, RetryPolicy, Transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS probe_applied (
    message_id TEXT NOT NULL, routing_key TEXT NOT NULL, source TEXT NOT NULL, attempt INTEGER NOT NULL
);
"""

probe = Consumer(
    "probe", bindings=tuple(os.environ.get("PROBE_BINDINGS", "product.#,sales_order.#").split(",")),
    delivery_limit=int(os.environ.get("PROBE_DELIVERY_LIMIT", "3")), schema=SCHEMA,
    retry=RetryPolicy(attempts=2, first_delay=0.01, max_delay=0.02, tiers=(1, 2)),
    description="test consumer steered by files")


def _dir() -> Path:
    return Path(os.environ["PROBE_DIR"])


def mode() -> str:
    path = _dir() / "mode"
    return path.read_text().strip() if path.exists() else "ok"


@probe.handler
async def handle(event: Event, tx: Transaction) -> None:
    with (_dir() / "calls").open("a") as calls:
        calls.write(f"{event.message_id} {event.attempt} {event.source}\n")
    current = mode()
    if current == "fail":
        raise OSError(f"probe failure on attempt {event.attempt}")
    if current == "permanent":
        raise Permanent("probe cannot handle this")
    if current == "die":
        os._exit(3)
    if current == "wait":
        while not (_dir() / "release").exists():
            await asyncio.sleep(0.02)
    await tx.execute("INSERT INTO probe_applied VALUES (?, ?, ?, ?)",
                     (event.message_id, event.routing_key, event.source, event.attempt))
