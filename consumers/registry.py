"""Find consumers by name: the built-ins, the `tradevine_consumers` entry point group, and `--app`.

Later sources win on a name clash: built-ins < entry points < `--app module:attribute`.
An attribute may be one Consumer or a list/tuple of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points

from consumers.consumer import Consumer
from consumers.errors import RegistryError

BUILTINS = ("consumers.services.inventory:inventory", "consumers.services.orders:orders")
ENTRY_POINT_GROUP = "tradevine_consumers"


def load_target(spec: str, *, origin: str = "--app") -> list[Consumer]:
    """Import `module:attribute` and return the Consumer(s) it names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise RegistryError(f"{origin} {spec!r} is not module:attribute; try --app myservice.consumer:stock.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"{origin} {spec!r}: cannot import {module_name!r} ({exc}); is it installed or "
                            "on PYTHONPATH?") from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise RegistryError(f"{origin} {spec!r}: module {module_name!r} has no attribute {attribute!r}.") from None
    found = [value] if isinstance(value, Consumer) else list(value) if isinstance(value, (list, tuple)) else []
    if not found or not all(isinstance(c, Consumer) for c in found):
        raise RegistryError(f"{origin} {spec!r} is a {type(value).__name__}, not a Consumer (or a list of "
                            "them); point it at the object made by Consumer(...).")
    return found


def load(apps: Sequence[str] = (), *, use_entry_points: bool = True) -> dict[str, Consumer]:
    """Every known consumer by name."""
    found: dict[str, Consumer] = {}

    def add(consumers: Iterable[Consumer]) -> None:
        for consumer in consumers:
            found[consumer.name] = consumer

    for spec in BUILTINS:
        add(load_target(spec, origin="built-in"))
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            add(load_target(point.value, origin=f"entry point {point.name!r} ({ENTRY_POINT_GROUP})"))
    for spec in apps:
        add(load_target(spec))
    return found


def find(name: str, known: dict[str, Consumer]) -> Consumer:
    try:
        return known[name]
    except KeyError:
        raise RegistryError(f"no consumer named {name!r}; known: {', '.join(sorted(known))}. Add yours with "
                            "--app module:attribute or an entry point in the "
                            f"{ENTRY_POINT_GROUP!r} group.") from None
