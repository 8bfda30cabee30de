"""The author's import surface."""

from __future__ import annotations

import subprocess
import sys

import consumers


def test_all_is_sorted_and_every_name_is_importable() -> None:
    assert consumers.__all__ == sorted(consumers.__all__)
    for name in consumers.__all__:
        assert getattr(consumers, name) is not None


def test_the_documented_names_are_exported() -> None:
    assert {"Consumer", "Event", "Permanent", "RetryPolicy", "Transaction", "Done", "Retry", "Park",
            "SqliteStore", "MemoryStore", "ConsumerSettings"} <= set(consumers.__all__)


def test_importing_the_author_api_loads_neither_aio_pika_nor_starlette() -> None:
    code = ("import sys, consumers, consumers.testing, consumers.services.inventory; "
            "print(sorted(m for m in ('aio_pika', 'aiormq', 'starlette', 'uvicorn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_author_api_takes_from_the_gateway_only_the_wire_contract_and_json_parsing() -> None:
    code = ("import sys, consumers, consumers.testing, consumers.services.inventory, consumers.services.orders; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # gateway.wire and the standard-library-only modules it stands on; gateway.message for exact big integers.
    assert done.stdout.strip() == str(["gateway", "gateway.amqp_addresses", "gateway.amqp_tls", "gateway.errors",
                                       "gateway.message", "gateway.wire"])
