"""`tradevine-consumers`: list, bad input answered with the value and the fix, never a traceback."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import consumers.errors
import gateway.errors
from consumers.cli import main
from consumers.registry import find, load


def run(argv: list[str], environ: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, environ or {}, out)
    return code, out.getvalue()


def test_list_shows_built_in_services_with_their_queues() -> None:
    code, out = run(["list"], {"CONSUMER_RETRY_DELAYS": "1,2"})
    assert code == 0
    assert "inventory: products with stock" in out and "binds product.# on tradevine.events" in out
    assert "queues inventory, inventory.retry.1s, inventory.retry.2s, inventory.parked; delivery limit 10" in out
    assert "orders: sales orders" in out and "binds sales_order.#" in out


def test_an_app_adds_a_users_consumers() -> None:
    code, out = run(["--app", "tests.consumers.sample_app:several", "list"])
    assert code == 0 and "audit: status changes" in out and "audit-two: -" in out


def test_an_unknown_name_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["run", "invetory"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no consumer named 'invetory'; known: inventory, orders" in err and "--app" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("spec, fragment", [
    ("nomodule", "is not module:attribute"),
    ("no_such_module_here:x", "cannot import 'no_such_module_here'"),
    ("tests.consumers.sample_app:missing", "has no attribute 'missing'"),
    ("tests.consumers.sample_app:not_a_consumer", "is a int, not a Consumer"),
])
def test_a_bad_app_is_explained(spec: str, fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["--app", spec, "list"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and repr(spec) in err


def test_bad_settings_are_all_reported_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["run", "inventory"], {"CONSUMER_PREFETCH": "lots", "AMQP_URL": "nope"})
    err = capsys.readouterr().err
    assert code == 2 and "CONSUMER_PREFETCH='lots'" in err and "AMQP_URL='nope'" in err


def test_a_settings_error_from_the_shared_code_is_exit_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["run", "inventory"], {"CONSUMER_HTTP_PORT": "0", "OTEL_TRACES_EXPORTER": "carrier-pigeon"})
    err = capsys.readouterr().err
    assert (code, err) == (2, "tradevine-consumers: OTEL_TRACES_EXPORTER needs the 'carrier-pigeon' exporter, which "
                              "is not installed; install a package providing the 'carrier-pigeon' span exporter, "
                              "or choose another exporter (otlp, console, none).\n")


def test_the_consumers_settings_error_is_the_gateways() -> None:
    assert consumers.errors.SettingsError is gateway.errors.SettingsError


def test_an_unreachable_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["parked", "list", "inventory"], {"AMQP_URL": "amqp://guest:secret@127.0.0.1:1/"})
    err = capsys.readouterr().err
    assert code == 2 and "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/" in err
    assert "secret" not in err


def test_a_bad_limit_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["parked", "replay", "inventory", "--limit", "0"], {})
    assert raised.value.code == 2 and "'0' must be at least 1" in capsys.readouterr().err


def test_find_returns_the_consumer() -> None:
    assert find("orders", load()).bindings == ("sales_order.#",)


def test_python_dash_m_consumers_is_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "consumers", "list"], capture_output=True, text=True,
                          check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "inventory" in done.stdout
