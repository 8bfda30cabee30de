"""A user's own consumer, loaded with --app in the CLI tests."""

from consumers import Consumer, Event, Transaction

audit = Consumer("audit", bindings=("sales_order.status_changed",), description="status changes")


@audit.handler
async def record(event: Event, tx: Transaction) -> None:
    return None


several = [audit, Consumer("audit-two", bindings=("product.deleted",))]
not_a_consumer = 42
