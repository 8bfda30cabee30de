"""`tradevine-gateway serve | reconcile | send-test-event | asyncapi`."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__, sample, wire
from gateway.errors import SettingsError

DEFAULT_URL = "http://127.0.0.1:8080/webhooks/tradevine"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradevine-gateway",
        description="Receive Tradevine webhooks and publish them, confirmed, to RabbitMQ.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the webhook gateway (settings from the environment)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="overrides GATEWAY_LOG_LEVEL (default info)")

    reconcile_parser = commands.add_parser(
        "reconcile", help="publish products and sales orders changed in a window (Tradevine REST API)")
    from gateway.reconcile import cli as reconcile

    reconcile.add_arguments(reconcile_parser)

    send = commands.add_parser("send-test-event", help="sign and POST a realistic webhook, print the answer")
    send.add_argument("--event", metavar="ROUTING_KEY",
                      help="routing key to build a body for, e.g. product.created "
                           f"(one of: {', '.join(sample.known_keys(wire.EVENT_TYPES))})")
    send.add_argument("--file", type=Path, help="send this body instead (bytes as they are)")
    send.add_argument("--url", default=DEFAULT_URL, help=f"gateway webhook URL (default {DEFAULT_URL})")
    send.add_argument("--secret", help="signing secret (default: first of TRADEVINE_CONSUMER_SECRET)")
    send.add_argument("--header", metavar="NAME=VALUE",
                      help="custom header (default: TRADEVINE_CUSTOM_HEADER_NAME/VALUE when set)")
    send.add_argument("--organisation-id", type=int, help="OrganisationID to put in the body")
    send.add_argument("--object-id", type=int, help="ProductID / SalesOrderID to put in the body")
    send.add_argument("--ascii-signature", action="store_true",
                      help="sign the ASCII-substituted body, as Tradevine's C# sample does")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")

    spec = commands.add_parser("asyncapi", help="print the AsyncAPI 3.0 document of the events on the exchange")
    spec.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format (default yaml)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args, environ)
    if args.command == "send-test-event":
        return send_test_event(args, environ)
    if args.command == "asyncapi":
        from gateway import asyncapi

        doc = asyncapi.document()
        sys.stdout.write(asyncapi.to_json(doc) if args.format == "json" else asyncapi.to_yaml(doc))
        return 0
    from gateway.reconcile import cli as reconcile

    return reconcile.run(args, environ)


def serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import uvicorn

    from gateway import logs, tracing
    from gateway.app import SERVICE_NAME, create_app
    from gateway.edge import EdgeProtocol
    from gateway.settings import GatewaySettings, open_files_problem
    from gateway.wire import port_in_use, redact_url

    try:
        settings = GatewaySettings.from_environ(environ)
        tracer_provider = tracing.provider_from_environ(environ, SERVICE_NAME)
    except SettingsError as exc:
        print(f"tradevine-gateway: {exc}", file=sys.stderr)
        return 2
    if problem := port_in_use(settings.host, settings.port, "GATEWAY_PORT") or open_files_problem(settings):
        print(f"tradevine-gateway: {problem}", file=sys.stderr)
        return 2
    level = args.log_level or settings.log_level
    logs.setup(level)
    import logging

    logging.getLogger("gateway.cli").info("gateway_starting", extra={
        "host": settings.host, "port": settings.port, "amqp_url": redact_url(settings.amqp_url),
        "exchange": settings.exchange, "secrets": len(settings.secrets),
        "custom_header": settings.custom_header_name, "ascii_compat": settings.ascii_compat,
        "tracing": tracer_provider is not None})
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
        "server_header": False, "log_level": level, "timeout_keep_alive": settings.keepalive,
        "timeout_graceful_shutdown": int(settings.publish_timeout) + 2,
        # What "auto" would pick, said outright: the C event loop when installed.
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools' protocol with the request deadline and the connection cap (gateway/edge.py).
        "http": EdgeProtocol,
        # Tradevine's address is of no use here; skip the per-request X-Forwarded-* rewriting.
        "proxy_headers": False,
    }
    # Per request the gateway allocates a few hundred short-lived objects: with the default gen-0
    # threshold (700) the collector ran several times per request batch (5 % of CPU in profiles).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # One process: scale out with replicas (several workers per pod measured no faster on 2 cores, and
    # each worker would export only its own counters).
    try:
        uvicorn.run(create_app(settings, tracer_provider=tracer_provider), **options)
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # exports what is left
    return 0


def send_test_event(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    import httpx

    from gateway import signature
    from gateway.wire import EnvReader

    secret = args.secret or (environ.get("TRADEVINE_CONSUMER_SECRET") or "").split(",")[0].strip()
    if not secret:
        print("tradevine-gateway: no signing secret; pass --secret or set TRADEVINE_CONSUMER_SECRET.",
              file=sys.stderr)
        return 2
    if (args.event is None) == (args.file is None):
        print("tradevine-gateway: give exactly one of --event ROUTING_KEY or --file BODY.json.",
              file=sys.stderr)
        return 2
    if args.file is not None:
        try:
            body = args.file.read_bytes()
        except OSError as exc:
            print(f"tradevine-gateway: cannot read --file {str(args.file)!r}: {exc.strerror}.",
                  file=sys.stderr)
            return 2
    else:
        table = wire.event_table(EnvReader(environ).raw("TRADEVINE_EVENT_TYPES"))
        try:
            body = sample.payload_for(args.event, table, organisation_id=args.organisation_id,
                                      object_id=args.object_id)
        except ValueError as exc:
            print(f"tradevine-gateway: --event {exc}", file=sys.stderr)
            return 2
    signed = signature.dotnet_ascii(body) if args.ascii_signature else body
    headers = {"Content-Type": "application/json",
               "X-Tradevine-Hmac-SHA256": signature.sign(signed, secret.encode())}
    header = args.header
    name_env, value_env = (environ.get(f"TRADEVINE_CUSTOM_HEADER_{part}") for part in ("NAME", "VALUE"))
    if header is None and name_env and value_env:
        header = f"{name_env}={value_env}"
    if header:
        name, sep, value = header.partition("=")
        if not sep or not name.strip():
            print(f"tradevine-gateway: --header {header.split('=')[0]!r}=... is not NAME=VALUE.",
                  file=sys.stderr)
            return 2
        headers[name.strip()] = value
    try:
        response = httpx.post(args.url, content=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"tradevine-gateway: POST {args.url} failed: {exc}; is the gateway running there?",
              file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.text}")
    return 0 if response.is_success else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
