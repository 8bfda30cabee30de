"""ReconcilerSettings.from_environ(mapping): the API credentials, the broker and the event table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from gateway import wire
from gateway.reconcile.client import ApiSettings
from gateway.reconcile.publish import UPDATED_KEYS, Model, updated_code
from gateway.reconcile.window import parse_utc_offset
from gateway.wire import EnvReader


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilerSettings:
    api: ApiSettings
    amqp_url: str = field(default="amqp://guest:guest@localhost:5672/", repr=False)
    exchange: str = wire.EXCHANGE
    publish_timeout: float = 3.0
    event_types: Mapping[int, str] = field(default_factory=lambda: dict(wire.EVENT_TYPES))
    event_type_overrides: Mapping[int, str] = field(default_factory=dict)
    org_utc_offset: timedelta | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ReconcilerSettings:
        env = EnvReader(environ)
        api = ApiSettings.read(env)
        overrides: dict[int, str] = {}
        try:
            overrides = wire.parse_event_types(env.raw("TRADEVINE_EVENT_TYPES") or "")
        except ValueError as exc:
            env.problems.append(f"TRADEVINE_EVENT_TYPES: {exc}")
        table = {**wire.EVENT_TYPES, **overrides}
        for key in UPDATED_KEYS.values():
            if updated_code(key, table, overrides) is None:
                env.problems.append(f"TRADEVINE_EVENT_TYPES maps no code to {key}; reconciled events "
                                    f"need one, e.g. add {_builtin_code(key)}={key}.")
        offset: timedelta | None = None
        if (offset_text := env.raw("TRADEVINE_ORG_UTC_OFFSET")) is not None:
            try:
                offset = parse_utc_offset(offset_text)
            except ValueError as exc:
                env.problems.append(f"TRADEVINE_ORG_UTC_OFFSET={exc}")
        settings = cls(
            api=api,
            amqp_url=env.amqp_url(),
            exchange=env.text("GATEWAY_EXCHANGE", wire.EXCHANGE),
            publish_timeout=env.number("GATEWAY_PUBLISH_TIMEOUT_SECONDS", 3.0, low=0.05, high=60.0,
                                       example=3.0),
            event_types=table,
            event_type_overrides=overrides,
            org_utc_offset=offset,
        )
        env.check()
        return settings

    def code_for(self, model: Model) -> int:
        code = updated_code(UPDATED_KEYS[model], self.event_types, self.event_type_overrides)
        assert code is not None, "checked in from_environ"
        return code


def _builtin_code(key: str) -> int:
    return next(code for code, routing_key in wire.EVENT_TYPES.items() if routing_key == key)

