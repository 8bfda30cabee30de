"""`tradevine-consumers run NAME | list | parked list|show|replay|purge NAME`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from consumers import parked as ops
from consumers.consumer import Consumer
from consumers.errors import BrokerError, ConsumerError, RegistryError, SettingsError
from consumers.registry import ENTRY_POINT_GROUP, find, load
from consumers.settings import ConsumerSettings
from gateway import __version__
from gateway.wire import port_in_use

PROG = "tradevine-consumers"


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; try --limit 10.") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1; try --limit 10.")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run and operate consumers of the tradevine.events exchange.",
        epilog=f"Your own consumers: --app module:attribute, or an entry point in the {ENTRY_POINT_GROUP!r} "
               "group. Settings come from the environment (AMQP_URL, GATEWAY_EXCHANGE, CONSUMER_*).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--app", action="append", default=[], metavar="MODULE:ATTRIBUTE",
                        help="load a Consumer (or a list of them) from your code; repeatable")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="consume until SIGTERM (drains in-flight handlers first)")
    run.add_argument("name", metavar="NAME")
    commands.add_parser("list", help="the consumers this installation knows, with their queues")
    parked = commands.add_parser("parked", help="inspect and act on NAME.parked")
    actions = parked.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "one line per parked message (left in the queue)"),
                         ("show", "headers and body of parked messages (left in the queue)"),
                         ("replay", "send parked messages back to queue NAME (source: replay)"),
                         ("purge", "delete parked messages")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("name", metavar="NAME")
        default = f"{ops.PAGE}" if action in ("list", "show") else "all"
        sub.add_argument("--limit", type=_limit, metavar="N", help=f"at most N messages (default: {default})")
        if action == "replay":
            sub.add_argument("--dry-run", action="store_true", help="print what would be replayed, change nothing")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         out: TextIO | None = None) -> int:
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        known = load(args.app)
        if args.command == "list":
            return list_consumers(known, environ, out)
        settings = ConsumerSettings.from_environ(environ)
        consumer = find(args.name, known)
        if args.command == "run":
            return run(consumer, settings, environ)
        return parked(args, consumer, settings, out)
    except (ConsumerError, SettingsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        # Settings, names and a broker that cannot be reached at start: fix and run again (2).
        return 2 if isinstance(exc, (SettingsError, RegistryError, BrokerError)) else 1
    except KeyboardInterrupt:
        return 130


def list_consumers(known: dict[str, Consumer], environ: Mapping[str, str], out: TextIO) -> int:
    settings = ConsumerSettings.from_environ(environ)
    from consumers.runner import topology_for

    for name in sorted(known):
        consumer = known[name]
        topology = topology_for(consumer, settings)
        print(f"{name}: {consumer.description or '-'}", file=out)
        print(f"  binds {', '.join(consumer.bindings)} on {topology.exchange}", file=out)
        print(f"  queues {topology.queue}, {', '.join(topology.tier_queues) or '(no delay tiers)'}, "
              f"{topology.parked}; delivery limit {topology.delivery_limit}", file=out)
    return 0


def run(consumer: Consumer, settings: ConsumerSettings, environ: Mapping[str, str] | None = None) -> int:
    from consumers.runner import serve
    from consumers.tuning import tune_process
    from gateway import logs, tracing

    if settings.http_port and (problem := port_in_use(settings.http_host, settings.http_port, "CONSUMER_HTTP_PORT")):
        raise SettingsError([problem])
    # tracing: the OTEL_* variables only
    provider = tracing.provider_from_environ(os.environ if environ is None else environ,
                                             f"tradevine-consumer-{consumer.name}")
    logs.setup(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tune_process()
    try:
        asyncio.run(serve(consumer, settings, tracer_provider=provider))
    finally:
        if provider is not None:
            provider.shutdown()  # exports what is left
    return 0


def parked(args: argparse.Namespace, consumer: Consumer, settings: ConsumerSettings, out: TextIO) -> int:
    from consumers.runner import topology_for

    topology = topology_for(consumer, settings)
    url = settings.amqp_url
    if args.action in ("list", "show"):
        page = asyncio.run(ops.peek(url, topology, limit=args.limit or ops.PAGE))
        for message in page.messages:
            print(message.summary() if args.action == "list" else message.as_json(), file=out)
        if page.more:
            print(f"showing the first {len(page.messages)} of {page.total} parked message(s) in "
                  f"{topology.parked}; {page.more} more (--limit N shows more)", file=out)
        else:
            print(f"{len(page.messages)} parked message(s) in {topology.parked}", file=out)
    elif args.action == "replay":
        messages = asyncio.run(ops.replay(url, topology, limit=args.limit, dry_run=args.dry_run))
        for message in messages:
            print(message.summary(), file=out)
        verb = "would replay" if args.dry_run else "replayed"
        print(f"{verb} {len(messages)} message(s) from {topology.parked} to {topology.queue}", file=out)
    else:
        count = asyncio.run(ops.purge(url, topology, limit=args.limit))
        print(f"purged {count} message(s) from {topology.parked}", file=out)
    return 0
