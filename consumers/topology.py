"""A consumer's queues: `NAME` (quorum, bound), `NAME.retry.<s>s` (delay tiers), `NAME.parked`.

Every queue is a durable quorum queue, on RabbitMQ 3.10 and later alike:

- `NAME` is bound to the exchange with the consumer's keys. `x-delivery-limit` is explicit (4.x
  would otherwise apply 20 and drop); a message redelivered more often than that (a consumer that
  crashes on it before acking) is dead-lettered, at least once, to `NAME.parked`.
- `NAME.retry.<s>s` holds messages for `s` seconds (`x-message-ttl`, supported by quorum queues
  since 3.10) and dead-letters them, at least once, through the default exchange back into `NAME`.
- `NAME.parked` keeps what failed until an operator replays or purges it. Its delivery limit is
  set very high so that looking at parked messages (get, then requeue) can never drop one.

At-least-once dead-lettering needs `x-overflow: reject-publish`; none of these queues has a length
limit, so that changes nothing else. Declaring is idempotent; a queue that exists with other
arguments is reported as a TopologyError naming the queue, the argument and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumers.errors import TopologyError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractQueue

PARKED_DELIVERY_LIMIT = 1_000_000
_QUORUM = {"x-queue-type": "quorum"}
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True, slots=True)
class Topology:
    """Queue names and arguments for one consumer (pure)."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    delivery_limit: int
    tiers: tuple[int, ...]

    @property
    def queue(self) -> str:
        return self.name

    @property
    def parked(self) -> str:
        return f"{self.name}.parked"

    def tier_queue(self, seconds: int) -> str:
        return f"{self.name}.retry.{seconds}s"

    @property
    def tier_queues(self) -> tuple[str, ...]:
        return tuple(self.tier_queue(s) for s in dict.fromkeys(self.tiers))

    def queue_arguments(self) -> dict[str, object]:
        return {**_QUORUM, "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.parked, **_AT_LEAST_ONCE}

    def tier_arguments(self, seconds: int) -> dict[str, object]:
        return {**_QUORUM, "x-message-ttl": seconds * 1000,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue, **_AT_LEAST_ONCE}

    def parked_arguments(self) -> dict[str, object]:
        return {**_QUORUM, "x-delivery-limit": PARKED_DELIVERY_LIMIT}

    def declarations(self) -> list[tuple[str, dict[str, object]]]:
        """Every queue with its arguments, parked first so dead-lettering always has a target."""
        return [(self.parked, self.parked_arguments()), (self.queue, self.queue_arguments()),
                *((self.tier_queue(s), self.tier_arguments(s)) for s in dict.fromkeys(self.tiers))]


_INEQUIVALENT = re.compile(r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']+)'"
                           r"[^:]*: (?P<detail>.*)$")


def precondition_message(reply: str, *, queue: str, wanted: Mapping[str, object]) -> str:
    """Turn a PRECONDITION_FAILED reply into a message that names the queue, argument and fix."""
    found = _INEQUIVALENT.search(reply)
    if found is None:
        return (f"RabbitMQ refused to declare {queue!r}: {reply}. Delete the queue (after moving its "
                "messages) or run the consumer under another name (CONSUMER_QUEUE).")
    arg, kind, name = found["arg"], found["kind"], found["name"]
    want = wanted.get(arg, "<not set>")
    return (f"{kind} {name!r} already exists with a different {arg!r} ({found['detail']}); we declare "
            f"{arg}={want!r}. Either delete the {kind} (after moving or replaying its messages: "
            f"rabbitmqctl delete_queue {name}) so it is declared afresh, or run this consumer under "
            "another queue name (CONSUMER_QUEUE).")


async def declare(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """Declare every queue and bind `NAME` to the exchange (which must exist: `ensure_topology`).

    A failed declaration closes the channel, so callers open a new one.
    """
    import aiormq

    queues: dict[str, AbstractQueue] = {}
    for name, arguments in topology.declarations():
        try:
            queues[name] = await channel.declare_queue(name, durable=True,
                                                       arguments=arguments)  # type: ignore[arg-type]
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyError(precondition_message(_reply(exc), queue=name, wanted=arguments)) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise TopologyError(refused_message(_reply(exc), topology)) from None
    main = queues[topology.queue]
    for key in topology.bindings:
        try:
            await main.bind(topology.exchange, routing_key=key)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise TopologyError(refused_message(_reply(exc), topology)) from None
    return main


def _reply(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def permissions(topology: Topology) -> dict[str, str]:
    """The narrowest RabbitMQ permissions (configure, write, read patterns) this consumer's user needs.

    Its own queues; the default exchange (`amq.default`), through which it moves messages to its
    delay tiers and parking queue; read on the exchange, to bind its queue. Nothing else: the gateway
    declares the exchange.
    """
    own = f"{re.escape(topology.name)}(\\.retry\\.[0-9]+s|\\.parked)?"
    return {"configure": f"^{own}$", "write": f"^({own}|amq\\.default)$",
            "read": f"^({own}|{re.escape(topology.exchange)})$"}


def refused_message(reply: str, topology: Topology) -> str:
    """ACCESS_REFUSED while declaring or binding: say which permissions this consumer's user needs."""
    needed = ", ".join(f"{kind} '{pattern}'" for kind, pattern in permissions(topology).items())
    return (f"RabbitMQ refused ({reply}); this consumer's user needs {needed} "
            "(docs/operations.md, least privilege).")
