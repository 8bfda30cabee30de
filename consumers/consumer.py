"""`Consumer`: a name, the routing keys it binds, handlers per routing-key pattern, a retry policy."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, overload

from consumers.event import Event
from consumers.policy import RetryPolicy
from consumers.store.base import Migration, Transaction, check_migrations

Handler = Callable[[Event, Transaction], Awaitable[None]]
H = TypeVar("H", bound=Handler)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*$")
_PATTERN = re.compile(r"^([a-z0-9_]+|\*|#)(\.([a-z0-9_]+|\*|#))*$")


StoreKind = Literal["sqlite", "memory"]
STORE_KINDS: tuple[StoreKind, ...] = ("sqlite", "memory")

def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str
    handler: Handler


class Consumer:
    """A consumer service. Queue `name` receives what `bindings` select from the exchange.

    Handlers are registered with `@consumer.handler` (every routing key) or
    `@consumer.handler("product.deleted", ...)` (topic patterns); the first registered match wins.
    A routing key no handler matches is parked, never dropped.

    `store` chooses where the guards (applied message ids, last event date per entity) live:
    `"sqlite"` (the default: the database named by CONSUMER_DATABASE, in the same transaction as the
    handler's SQL; a SQLite file or, for a `postgresql://` URL, PostgreSQL) or `"memory"` (for handlers
    whose effects live elsewhere; lost on restart, no SQL).

    `migrations` are the consumer's schema as ordered, versioned steps (`Migration(1, "CREATE TABLE ...")`);
    the store applies the missing ones at start and refuses a database newer than the code. `schema`
    (CREATE TABLE IF NOT EXISTS ..., run at every start) still works for a schema that never changes.
    """

    def __init__(self, name: str, *, bindings: tuple[str, ...], delivery_limit: int = 10,
                 retry: RetryPolicy | None = None, schema: str = "", migrations: Sequence[Migration] = (),
                 description: str = "", store: StoreKind = "sqlite") -> None:
        if not _NAME.match(name):
            raise ValueError(f"consumer name {name!r} must be lowercase letters, digits, '_' or '-' "
                             "(dots between words); try 'inventory'.")
        if not bindings:
            raise ValueError(f"consumer {name!r} has no bindings; try bindings=('product.#',).")
        for key in bindings:
            if not _PATTERN.match(key):
                raise ValueError(f"binding {key!r} of consumer {name!r} is not a topic pattern; "
                                 "try 'product.#' or 'sales_order.shipment.*'.")
        if store not in STORE_KINDS:
            raise ValueError(f"store={store!r} of consumer {name!r} is not one of {', '.join(STORE_KINDS)}; "
                             "try 'sqlite'.")
        if isinstance(delivery_limit, bool) or not 1 <= delivery_limit <= 1000:
            raise ValueError(f"delivery_limit={delivery_limit!r} of consumer {name!r} must be 1..1000; try 10.")
        self.name = name
        self.bindings = tuple(bindings)
        self.delivery_limit = delivery_limit
        self.retry = retry or RetryPolicy()
        self.schema = schema
        try:
            self.migrations = check_migrations(migrations)
        except ValueError as exc:
            raise ValueError(f"consumer {name!r}: {exc}") from None
        self.description = description
        self.store: StoreKind = store
        self.routes: list[Route] = []
        self._resolved: dict[str, Handler | None] = {}  # routing key → handler; emptied on registration

    def __repr__(self) -> str:
        return f"Consumer({self.name!r}, bindings={self.bindings!r})"

    @overload
    def handler(self, fn: H, /) -> H: ...

    @overload
    def handler(self, *patterns: str) -> Callable[[H], H]: ...

    def handler(self, *args: object) -> object:
        if len(args) == 1 and callable(args[0]):
            fn = args[0]
            self.routes.append(Route("#", fn))
            self._resolved.clear()
            return fn
        patterns = tuple(args)
        for pattern in patterns:
            if not isinstance(pattern, str) or not _PATTERN.match(pattern):
                raise ValueError(f"handler pattern {pattern!r} is not a topic pattern; try 'product.deleted'.")

        def register(fn: H) -> H:
            for pattern in patterns or ("#",):
                self.routes.append(Route(str(pattern), fn))
            self._resolved.clear()
            return fn

        return register

    def handler_for(self, routing_key: str) -> Handler | None:
        try:
            return self._resolved[routing_key]  # matching the patterns again costs more than the lookup
        except KeyError:
            pass
        found = next((route.handler for route in self.routes if topic_matches(route.pattern, routing_key)), None)
        if len(self._resolved) < 1024:  # routing keys are few; a flood of odd ones is not kept
            self._resolved[routing_key] = found
        return found
