"""Queue names and arguments; PRECONDITION_FAILED explained."""

from __future__ import annotations

import re

from consumers.topology import PARKED_DELIVERY_LIMIT, Topology, permissions, precondition_message, refused_message

TOPOLOGY = Topology("orders", "tradevine.events", ("sales_order.#",), 10, (5, 30, 5))


def test_queue_names_follow_the_contract() -> None:
    assert (TOPOLOGY.queue, TOPOLOGY.parked) == ("orders", "orders.parked")
    assert TOPOLOGY.tier_queues == ("orders.retry.5s", "orders.retry.30s")


def test_the_main_queue_is_quorum_with_a_delivery_limit_dead_lettering_to_parked() -> None:
    assert TOPOLOGY.queue_arguments() == {
        "x-queue-type": "quorum", "x-delivery-limit": 10, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "orders.parked", "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish"}


def test_a_tier_holds_messages_for_its_seconds_then_returns_them_to_the_queue() -> None:
    assert TOPOLOGY.tier_arguments(30) == {
        "x-queue-type": "quorum", "x-message-ttl": 30_000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "orders", "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish"}


def test_parked_is_declared_first_and_never_drops_on_looking() -> None:
    names = [name for name, _ in TOPOLOGY.declarations()]
    assert names == ["orders.parked", "orders", "orders.retry.5s", "orders.retry.30s"]
    assert TOPOLOGY.parked_arguments() == {"x-queue-type": "quorum", "x-delivery-limit": PARKED_DELIVERY_LIMIT}


def test_a_precondition_failure_names_queue_argument_and_fix() -> None:
    reply = ("PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'orders' in vhost '/': "
             "received the value '10' of type 'signedint' but current is the value '5' of type 'long'")
    message = precondition_message(reply, queue="orders", wanted=TOPOLOGY.queue_arguments())
    assert "queue 'orders'" in message and "'x-delivery-limit'" in message
    assert "x-delivery-limit=10" in message and "delete" in message and "CONSUMER_QUEUE" in message


def test_an_unexpected_reply_is_still_explained() -> None:
    message = precondition_message("PRECONDITION_FAILED - something new", queue="orders", wanted={})
    assert "'orders'" in message and "something new" in message


def test_the_permissions_cover_its_own_queues_and_nothing_of_another_consumer() -> None:
    allowed = {kind: re.compile(pattern) for kind, pattern in permissions(TOPOLOGY).items()}
    own = ["orders", "orders.parked", "orders.retry.5s", "orders.retry.30s"]
    others = ["inventory", "orders2", "orders.retry.5s.x", "xorders", "tradevine.events.unrouted", "amq.topic"]
    for kind in ("configure", "write", "read"):
        assert all(allowed[kind].fullmatch(name) for name in own), kind
        assert not any(allowed[kind].search(name) for name in others), kind
    assert not allowed["configure"].search("tradevine.events") and not allowed["write"].search("tradevine.events")
    assert allowed["write"].search("amq.default") and allowed["read"].search("tradevine.events")


def test_a_refusal_names_the_permissions_needed() -> None:
    text = refused_message("ACCESS_REFUSED - access to queue 'orders' in vhost '/' refused for user 'x'", TOPOLOGY)
    assert text.startswith("RabbitMQ refused (ACCESS_REFUSED - access to queue 'orders'")
    assert "configure '^orders(\\.retry\\.[0-9]+s|\\.parked)?$'" in text
    assert "read '^(orders(\\.retry\\.[0-9]+s|\\.parked)?|tradevine\\.events)$'" in text
