"""Every delivery ends in one outcome (pure): `Done` → ack; `Retry` → next delay tier; `Park` → parked.

The runner acts on it: it republishes a `Retry` or `Park` with publisher confirms and acks the
original only once the broker confirmed the copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from consumers.policy import RetryPolicy
from consumers.store import Verdict
from consumers.topology import Topology
from gateway import wire

ERROR_LIMIT = 500
# Broker bookkeeping that must not follow a copy we publish ourselves.
_BROKER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                   "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
                   "x-delivery-count")


@dataclass(frozen=True, slots=True)
class Done:
    verdict: Verdict

    @property
    def label(self) -> str:
        return self.verdict


@dataclass(frozen=True, slots=True)
class Retry:
    queue: str
    delay: int
    attempt: int  # the attempt number the copy will carry
    error: str

    @property
    def label(self) -> str:
        return "retried"


@dataclass(frozen=True, slots=True)
class Park:
    queue: str
    error: str
    attempt: int
    permanent: bool

    @property
    def label(self) -> str:
        return "parked"


Outcome = Done | Retry | Park


def error_text(exc: BaseException, limit: int = ERROR_LIMIT) -> str:
    """`Type: message`, on one line, at most `limit` characters."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decide(result: Verdict | BaseException, *, attempt: int, policy: RetryPolicy,
           topology: Topology) -> Outcome:
    """What to do with a delivery whose (in-process retried) handling ended in `result`.

    `attempt` is the broker-level attempt (1 for the first delivery, +1 per delay tier).
    """
    if not isinstance(result, BaseException):
        return Done(result)
    error = error_text(result)
    if not policy.retryable(result):
        return Park(topology.parked, error, attempt, permanent=True)
    if attempt - 1 < len(topology.tiers):
        delay = topology.tiers[attempt - 1]
        return Retry(topology.tier_queue(delay), delay, attempt + 1, error)
    return Park(topology.parked, error, attempt, permanent=False)


def copy_headers(headers: Mapping[str, object], outcome: Retry | Park, *, failed_at: datetime) -> dict[str, object]:
    """Headers for the copy sent to a delay tier or to the parking queue."""
    copied = {k: v for k, v in headers.items() if k not in _BROKER_HEADERS}
    copied[wire.H_ATTEMPT] = str(outcome.attempt)
    if isinstance(outcome, Park):
        copied[wire.H_ERROR] = outcome.error
        copied[wire.H_FAILED_AT] = wire.utc_iso(failed_at)
    return copied


def replay_headers(headers: Mapping[str, object]) -> dict[str, object]:
    """Headers for a parked message sent back to its consumer: source `replay`, attempt reset."""
    dropped = {*_BROKER_HEADERS, wire.H_ATTEMPT, wire.H_ERROR, wire.H_FAILED_AT}
    copied = {k: v for k, v in headers.items() if k not in dropped}
    copied[wire.H_SOURCE] = wire.SOURCE_REPLAY
    return copied
