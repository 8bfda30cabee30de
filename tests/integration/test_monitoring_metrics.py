"""Every metric name the alert rules and the Grafana dashboard use is exposed by the running services.

The gateway and a consumer run as real processes against the broker; one event goes through both, then
their live /metrics are scraped and compared with the names in deploy/components/monitoring/. Names from
Prometheus itself and kube-state-metrics are whitelisted in tests/monitoring.py; RabbitMQ's are checked
against a node of the test's own with the rabbitmq_prometheus plugin, scraped as the PodMonitor does.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.integration.brokers import RABBITMQ_BIN, ScratchBroker, free_port
from tests.integration.consumer_helpers import ConsumerProcess, Names, delete_all, eventually
from tests.integration.processes import GatewayProcess, send
from tests.monitoring import (
    RABBITMQ_METRICS,
    SERVICE_PREFIXES,
    dashboard_expressions,
    detailed_families,
    exposed_names,
    rule_expressions,
    used_names,
)

pytestmark = pytest.mark.integration


def scrape(url: str) -> str:
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200, f"{url}: {answer.status_code}"
    return answer.text


async def test_every_service_metric_the_alerts_and_the_dashboard_use_is_on_a_live_metrics_page(
        amqp_url: str, unique: str, tmp_path: Path) -> None:
    names = Names(f"test.monitoring.{unique}", f"inventory-{unique}")
    port = free_port()
    consumer = ConsumerProcess("inventory", {
        "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": names.exchange, "CONSUMER_QUEUE": names.queue,
        "CONSUMER_DATABASE": str(tmp_path / "inventory.sqlite3"), "CONSUMER_HTTP_PORT": str(port),
        "CONSUMER_HTTP_HOST": "127.0.0.1", "CONSUMER_RETRY_DELAYS": "1"}, tmp_path / "consumer.log").start()
    consumer_metrics = f"http://127.0.0.1:{port}/metrics"

    def consumer_ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def applied() -> bool:
        return 'tradevine_consumer_messages_total{consumer="inventory",outcome="applied"} 1.0' in scrape(
            consumer_metrics)

    try:
        await eventually(consumer_ready, 30, "consumer ready")
        with GatewayProcess(amqp_url, names.exchange, log_path=tmp_path / "gateway.log") as gateway:
            send(gateway.url, "product.created")
            await eventually(applied, 30, "event applied by the consumer")
            gateway_text = scrape(gateway.base + "/metrics")
        consumer_text = scrape(consumer_metrics)
    finally:
        if consumer.process is not None and consumer.process.poll() is None:
            consumer.signal(signal.SIGTERM)
            await consumer.wait()
        consumer.stop()
        await delete_all(amqp_url, names)

    exposed = exposed_names(gateway_text) | exposed_names(consumer_text)
    # The event went through: these are samples, not only TYPE lines.
    assert 'tradevine_gateway_events_total{routing_key="product.created"} 1.0' in gateway_text
    assert "tradevine_gateway_broker_up 1.0" in gateway_text
    assert 'tradevine_consumer_handler_seconds_bucket{consumer="inventory",le="+Inf"} 1.0' in consumer_text
    used = used_names({**rule_expressions(), **dashboard_expressions()})
    service_names = {name for name in used if name.startswith(SERVICE_PREFIXES)}
    assert len(service_names) >= 8
    missing = {name: sorted(used[name]) for name in service_names - exposed}
    assert not missing, f"used by rules or the dashboard but on no live /metrics page: {missing}"


local_node = pytest.mark.skipif(not ((RABBITMQ_BIN / "rabbitmq-server").exists() and os.geteuid() == 0),
                                reason="needs Debian's rabbitmq-server and root to start a node with the "
                                       "rabbitmq_prometheus plugin")


@local_node
async def test_the_rabbitmq_names_are_on_the_plugins_detailed_page_as_the_podmonitor_scrapes_it() -> None:
    with ScratchBroker(prometheus=True) as broker:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            for queue in ("inventory", "inventory.parked"):
                await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key="inventory.parked")
            params = [("family", family) for family in detailed_families()]

            def parked_counted() -> bool:
                text = httpx.get(broker.prometheus_url + "/metrics/detailed", params=params, timeout=5).text
                return any(line.startswith("rabbitmq_detailed_queue_messages{") and 'queue="inventory.parked"' in line
                           and line.endswith(" 1") for line in text.splitlines())

            await eventually(parked_counted, 30, "the parked message counted by the plugin")
            text = httpx.get(broker.prometheus_url + "/metrics/detailed", params=params, timeout=5).text
    exposed = exposed_names(text)
    assert not RABBITMQ_METRICS - exposed, f"not on /metrics/detailed: {sorted(RABBITMQ_METRICS - exposed)}"
    used = used_names({**rule_expressions(), **dashboard_expressions()})
    assert {name for name in used if name.startswith("rabbitmq_")} <= RABBITMQ_METRICS
