"""Consumer framework for the tradevine.events exchange: the author's API.

    from consumers import Consumer, Event, Permanent, RetryPolicy, Transaction

Importing it loads neither aio-pika nor a web framework; `consumers.runner` does the I/O.
"""

from consumers.consumer import Consumer, Handler, topic_matches
from consumers.errors import ConsumerError, MalformedEvent, Permanent
from consumers.event import Event
from consumers.outcome import Done, Outcome, Park, Retry
from consumers.policy import RetryPolicy
from consumers.settings import ConsumerSettings
from consumers.store import MemoryStore, Migration, SqliteStore, Store, Transaction, Verdict

__all__ = [
    "Consumer",
    "ConsumerError",
    "ConsumerSettings",
    "Done",
    "Event",
    "Handler",
    "MalformedEvent",
    "MemoryStore",
    "Migration",
    "Outcome",
    "Park",
    "Permanent",
    "Retry",
    "RetryPolicy",
    "SqliteStore",
    "Store",
    "Transaction",
    "Verdict",
    "topic_matches",
]
