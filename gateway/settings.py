"""Gateway settings from an environment mapping, validated once with every problem reported together.

The reader they are read with, `wire.EnvReader`, is shared with the consumers and the reconciler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway import wire
from gateway.wire import EnvReader


def open_files_problem(settings: GatewaySettings) -> str | None:
    """Raise the soft open-files limit to what GATEWAY_MAX_CONNECTIONS needs; a one-line problem if it cannot."""
    import resource

    needed = settings.max_connections + settings.connection_overflow + OTHER_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        fits = max(1, (hard - OTHER_DESCRIPTORS) * 10 // 11)
        return (f"GATEWAY_MAX_CONNECTIONS={settings.max_connections} needs {needed} open files, but this process "
                f"may open at most {hard} (ulimit -n); lower it, e.g. GATEWAY_MAX_CONNECTIONS={fits}, "
                "or raise the limit.")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


# Descriptors besides client connections: the listening socket, AMQP, logs, the interpreter's own.
OTHER_DESCRIPTORS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    secrets: tuple[str, ...] = field(repr=False)
    custom_header_name: str | None = None
    custom_header_value: str | None = field(default=None, repr=False)
    ascii_compat: bool = True
    event_types: Mapping[int, str] = field(default_factory=lambda: dict(wire.EVENT_TYPES))
    amqp_url: str = field(default="amqp://guest:guest@localhost:5672/", repr=False)
    exchange: str = wire.EXCHANGE
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 2_097_152
    publish_timeout: float = 3.0
    keep_access_token: bool = False
    # Above ingress-nginx's 60 s upstream keep-alive: the proxy, not the gateway, closes an idle
    # connection first, so it never sends a request down a connection the gateway is closing.
    keepalive: float = 75.0
    # A request (headers and body) must arrive within this; so must the first request of a new
    # connection. Tradevine gives up after 5 s, and the publish (GATEWAY_PUBLISH_TIMEOUT_SECONDS)
    # comes after it.
    request_timeout: float = 3.0
    # Open connections; a few more (OVERFLOW) are answered 503 + Retry-After, beyond that refused.
    max_connections: int = 1024
    # Publishes awaiting the broker's confirm; beyond it, 503 + Retry-After.
    max_in_flight: int = 256
    log_level: str = "info"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, require_secret: bool = True) -> GatewaySettings:
        env = EnvReader(environ)
        secret_text = (env.required("TRADEVINE_CONSUMER_SECRET",
                                    "set it to your Tradevine API application's consumer secret "
                                    "(several, comma-separated, during rotation).")
                       if require_secret else env.text("TRADEVINE_CONSUMER_SECRET", ""))
        secrets = tuple(s.strip() for s in secret_text.split(",") if s.strip())
        header_name = env.raw("TRADEVINE_CUSTOM_HEADER_NAME")
        header_value = env.raw("TRADEVINE_CUSTOM_HEADER_VALUE")
        if (header_name is None) != (header_value is None):
            env.problems.append(
                "TRADEVINE_CUSTOM_HEADER_NAME and TRADEVINE_CUSTOM_HEADER_VALUE must be set together; "
                "set both (as configured on the Tradevine webhook) or neither.")
        table: dict[int, str] = dict(wire.EVENT_TYPES)
        try:
            table = wire.event_table(env.raw("TRADEVINE_EVENT_TYPES"))
        except ValueError as exc:
            env.problems.append(f"TRADEVINE_EVENT_TYPES: {exc}")
        exchange = env.text("GATEWAY_EXCHANGE", wire.EXCHANGE)
        settings = cls(
            secrets=secrets,
            custom_header_name=header_name if header_value is not None else None,
            custom_header_value=header_value if header_name is not None else None,
            ascii_compat=env.boolean("TRADEVINE_SIGNATURE_ASCII_COMPAT", True),
            event_types=table,
            amqp_url=env.amqp_url(),
            exchange=exchange,
            host=env.text("GATEWAY_HOST", "127.0.0.1"),
            port=env.integer("GATEWAY_PORT", 8080, low=0, high=65535, example=8080),
            max_body_bytes=env.integer("GATEWAY_MAX_BODY_BYTES", 2_097_152, low=1024,
                                       high=64 * 1024 * 1024, example=2_097_152),
            publish_timeout=env.number("GATEWAY_PUBLISH_TIMEOUT_SECONDS", 3.0, low=0.05, high=4.5,
                                       example=3.0),
            keep_access_token=env.boolean("GATEWAY_KEEP_ACCESS_TOKEN", False),
            log_level=env.log_level("GATEWAY_LOG_LEVEL"),
            keepalive=env.number("GATEWAY_KEEPALIVE_SECONDS", 75.0, low=1.0, high=3600.0, example=75.0),
            request_timeout=env.number("GATEWAY_REQUEST_TIMEOUT_SECONDS", 3.0, low=0.1, high=60.0,
                                       example=3.0),
            max_connections=env.integer("GATEWAY_MAX_CONNECTIONS", 1024, low=1, high=1_000_000, example=1024),
            max_in_flight=env.integer("GATEWAY_MAX_IN_FLIGHT", 256, low=1, high=100_000, example=256),
        )
        env.check()
        return settings

    @property
    def connection_overflow(self) -> int:
        """Connections past `max_connections` that still get a 503 answer; past these, closed at once."""
        return max(8, self.max_connections // 10)

    @property
    def secret_bytes(self) -> tuple[bytes, ...]:
        return tuple(s.encode("utf-8") for s in self.secrets)
