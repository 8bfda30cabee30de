"""`tradevine-gateway reconcile`: its options, SIGTERM handling, the printed summary and the exit code."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, TextIO

from prometheus_client import write_to_textfile

from gateway import tracing, wire
from gateway.errors import ApiAuthError, ApiError, BrokerUnavailable, SettingsError
from gateway.publisher import AmqpPublisher
from gateway.reconcile.client import TradevineClient
from gateway.reconcile.publish import MODELS, Model
from gateway.reconcile.run import (
    Progress,
    Summary,
    format_summary,
    metrics_registry,
    no_progress,
    otel_tracer,
    reconcile,
    terminal_progress,
)
from gateway.reconcile.settings import ReconcilerSettings
from gateway.reconcile.window import Window, parse_duration, parse_time
from gateway.wire import redact_url

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ONLY_CHOICES: Final[Mapping[str, Model]] = {"products": "product", "sales-orders": "sales_order"}

SERVICE_NAME: Final = "tradevine-reconciler"  # OpenTelemetry service.name unless OTEL_SERVICE_NAME names one
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
# SIGTERM (a pod deleted, a node drained, the Job's deadline): the run stops where it is, closes its
# connections and exits with the shell's code for "terminated by SIGTERM", 128 + 15.
EXIT_TERMINATED: Final = 128 + signal.SIGTERM


def _duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _page_size_arg(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= 499:
        raise argparse.ArgumentTypeError(f"{text!r} is not a page size; use 1..499, e.g. 200.")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `reconcile` options."""
    parser.add_argument("--lookback", required=True, type=_duration_arg, metavar="DURATION",
                        help="how far back from --until to look, e.g. 90s, 30m, 2h, 1d")
    parser.add_argument("--until", type=_time_arg, default=None, metavar="TIME",
                        help="end of the window, ISO-8601 (UTC unless an offset is given); default now")
    parser.add_argument("--only", choices=sorted(ONLY_CHOICES), default=None,
                        help="reconcile one model only")
    parser.add_argument("--dry-run", action="store_true",
                        help="fetch and count, publish nothing")
    parser.add_argument("--metrics-file", default=None, metavar="PATH",
                        help="also write the run's metrics as a Prometheus text file")
    parser.add_argument("--page-size", type=_page_size_arg, default=None, metavar="N",
                        help="objects per API page, 1..499 (default TRADEVINE_API_PAGE_SIZE or 200)")


async def _connect(settings: ReconcilerSettings) -> AmqpPublisher:
    publisher = AmqpPublisher(settings.amqp_url, exchange=settings.exchange,
                              timeout=settings.publish_timeout, channels=1,
                              connection_name=wire.APP_ID_RECONCILER)
    await publisher.start()
    if not publisher.ready():
        await publisher.close()
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {redact_url(settings.amqp_url)}; "
                                "check AMQP_URL and that the broker is running.")
    return publisher


class Terminated(Exception):
    """SIGTERM arrived; the run stopped where it was."""


class _Termination:
    """SIGTERM handling for one run: a flag before the event loop runs, a cancellation inside it.

    As PID 1 in a container the default action of SIGTERM does nothing (the kernel ignores it), so
    without a handler the run would go on until the kubelet's SIGKILL at the end of the grace period.
    """

    def __init__(self) -> None:
        self.received = False
        self._task: asyncio.Task[None] | None = None

    def on_signal(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        if self.received:
            return
        self.received = True
        if self._task is not None:
            self._task.cancel()

    def attach(self, task: asyncio.Task[None]) -> None:
        self._task = task
        if self.received:
            task.cancel()


async def _run(summary: Summary, settings: ReconcilerSettings, page_size: int | None,
               progress: Progress, termination: _Termination | None = None,
               tracer_provider: TracerProvider | None = None) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    handled = termination is not None and task is not None and threading.current_thread() is threading.main_thread()
    if handled:
        assert termination is not None and task is not None
        loop.add_signal_handler(signal.SIGTERM, termination.on_signal)
        termination.attach(task)
    try:
        publisher = None if summary.dry_run else await _connect(settings)
        try:
            async with TradevineClient(settings.api) as client:
                await reconcile(client, publisher, settings=settings, window=summary.window,
                                models=summary.models, page_size=page_size, summary=summary,
                                progress=progress, tracer=None if tracer_provider is None else
                                otel_tracer(tracer_provider))
        finally:
            if publisher is not None:
                await publisher.close()
    except asyncio.CancelledError:
        if termination is not None and termination.received:
            raise Terminated from None
        raise
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)


def run(args: argparse.Namespace, environ: Mapping[str, str], *, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Run `reconcile` and return the exit code: 0 done, 1 failed (API or broker), 2 bad settings,
    143 stopped by SIGTERM (connections closed; what was published stays published)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        settings = ReconcilerSettings.from_environ(environ)
        tracer_provider = tracing.provider_from_environ(environ, SERVICE_NAME)
    except SettingsError as exc:
        print(exc, file=err)
        return EXIT_USAGE
    until = args.until or datetime.now(UTC)
    models: tuple[Model, ...] = (ONLY_CHOICES[args.only],) if args.only else MODELS
    summary = Summary(window=Window.ending(until, args.lookback), models=models, dry_run=args.dry_run,
                      exchange=settings.exchange)
    progress = terminal_progress(err) if err.isatty() else no_progress
    started = time.monotonic()
    termination = _Termination()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, termination.on_signal) if in_main_thread else None
    try:
        asyncio.run(_run(summary, settings, args.page_size, progress, termination, tracer_provider))
    except Terminated:
        summary.error = ("stopped by SIGTERM; the connections are closed and what was published stays "
                         "published; the next run covers this window again")
    except ApiAuthError as exc:
        summary.error = str(exc)
    except ApiError as exc:
        summary.error = f"Tradevine API: {exc}"
    except BrokerUnavailable as exc:
        summary.error = f"RabbitMQ: {exc}"
    except KeyboardInterrupt:
        summary.error = "interrupted"
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if tracer_provider is not None:
            tracer_provider.shutdown()  # exports the run's spans before the process ends
    summary.seconds = time.monotonic() - started
    print(format_summary(summary), file=out)
    if summary.error:
        print(f"reconcile failed: {summary.error}", file=err)
    if args.metrics_file:
        try:
            write_to_textfile(args.metrics_file, metrics_registry(summary))
        except OSError as exc:
            print(f"cannot write --metrics-file {args.metrics_file!r}: {exc.strerror}; "
                  "choose a writable path.", file=err)
            return EXIT_FAILED
    if termination.received and not summary.ok:
        return EXIT_TERMINATED
    return EXIT_OK if summary.ok else EXIT_FAILED
