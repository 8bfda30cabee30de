"""Consumer settings from an environment mapping, validated once with every problem reported together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consumers.errors import SettingsError
from gateway import wire
from gateway.wire import EnvReader


def parse_delays(text: str) -> tuple[int, ...]:
    """`CONSUMER_RETRY_DELAYS`: comma-separated whole seconds (`5,30,120,600`), or `none`."""
    if text.strip().lower() == "none":
        return ()
    delays: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or not 1 <= int(part) <= 86_400:
            raise ValueError(f"{part!r} is not a whole number of seconds in 1..86400")
        delays.append(int(part))
    return tuple(delays)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSettings:
    amqp_url: str = field(default="amqp://guest:guest@localhost:5672/", repr=False)
    exchange: str = wire.EXCHANGE
    database: str | None = None          # None → ./NAME.sqlite3
    queue: str | None = None             # None → the consumer's name
    http_host: str = "127.0.0.1"
    http_port: int = 8081                # 0 disables /healthz, /readyz, /metrics
    prefetch: int = 128
    concurrency: int = 64
    batch_size: int = 64
    batch_max_wait_ms: int = 5
    retry_delays: tuple[int, ...] | None = None  # None → the service's own tiers
    drain_seconds: float = 25.0
    handler_timeout: float | None = None  # None → the consumer's RetryPolicy.handler_timeout
    log_level: str = "info"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ConsumerSettings:
        env = EnvReader(environ)
        delays: tuple[int, ...] | None = None
        if (text := env.raw("CONSUMER_RETRY_DELAYS")) is not None:
            try:
                delays = parse_delays(text)
            except ValueError as exc:
                env.problems.append(f"CONSUMER_RETRY_DELAYS={text!r}: {exc}; try 5,30,120,600 "
                                    "(or 1,2 in tests, or none for no delay tiers).")
        level = env.log_level("CONSUMER_LOG_LEVEL")
        queue = env.raw("CONSUMER_QUEUE")
        if queue is not None and (queue.startswith("amq.") or any(c.isspace() for c in queue)):
            env.problems.append(f"CONSUMER_QUEUE={queue!r} is not a usable queue name; try inventory-staging.")
        settings = cls(
            amqp_url=env.amqp_url(),
            exchange=env.text("GATEWAY_EXCHANGE", wire.EXCHANGE),
            database=env.raw("CONSUMER_DATABASE"),
            queue=queue,
            http_host=env.text("CONSUMER_HTTP_HOST", "127.0.0.1"),
            http_port=env.integer("CONSUMER_HTTP_PORT", 8081, low=0, high=65535, example=8081),
            prefetch=env.integer("CONSUMER_PREFETCH", 128, low=1, high=2_000, example=128),
            concurrency=env.integer("CONSUMER_CONCURRENCY", 64, low=1, high=2_000, example=64),
            batch_size=env.integer("CONSUMER_BATCH_SIZE", 64, low=1, high=2_000, example=64),
            batch_max_wait_ms=env.integer("CONSUMER_BATCH_MAX_WAIT_MS", 5, low=0, high=10_000, example=5),
            retry_delays=delays,
            drain_seconds=env.number("CONSUMER_DRAIN_SECONDS", 25.0, low=0.0, high=3600.0, example=25.0),
            log_level=level,
            handler_timeout=(None if env.raw("CONSUMER_HANDLER_TIMEOUT_SECONDS") is None else
                             env.number("CONSUMER_HANDLER_TIMEOUT_SECONDS", 60.0, low=0.001, high=86_400.0,
                                        example=60.0)),
        )
        if env.problems:
            raise SettingsError(env.problems)
        return settings

    def queue_name(self, consumer_name: str) -> str:
        return self.queue or consumer_name

    def database_path(self, consumer_name: str) -> str:
        return self.database or f"./{consumer_name}.sqlite3"
