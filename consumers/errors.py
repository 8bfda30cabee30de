"""The consumers' exceptions.

    ConsumerError
    ├── RegistryError        unknown consumer name, or a bad --app / entry point
    ├── TopologyError        a queue exists with other arguments (PRECONDITION_FAILED)
    ├── BrokerError          RabbitMQ unreachable, or a republish not confirmed
    │   └── BrokerTlsError   TLS to RabbitMQ failed: wrong CA, host name or port (a setting to fix)
    ├── UnsupportedOperation the store cannot do what the handler asked (SQL on MemoryStore)
    ├── HandlerTimeout       a handler ran past its time limit (retried like any failure)
    └── MigrationError       a schema migration failed at start (rolled back; the consumer does not start)

    Permanent                raised by a handler: never retried, parked at once
    └── MalformedEvent       the message is not a JSON object (nothing to retry)

    SettingsError            bad or missing CONSUMER_* (or shared) variables, all listed at once: the
                             gateway's own class (gateway.errors), one for both sides
"""

from __future__ import annotations

from gateway.wire import SettingsError as SettingsError


class ConsumerError(Exception):
    """Base of every error the consumer framework raises on purpose, SettingsError (shared with the gateway) aside."""


class RegistryError(ConsumerError):
    """A consumer could not be found or loaded."""


class TopologyError(ConsumerError):
    """A queue or exchange exists on the broker with arguments other than ours."""


class BrokerError(ConsumerError):
    """RabbitMQ could not be reached, or did not confirm a republish."""


class BrokerTlsError(BrokerError):
    """The TLS handshake with RabbitMQ failed: AMQP_URL's CA, host name or port needs fixing."""


class UnsupportedOperation(ConsumerError):
    """The store behind the transaction cannot do this."""


class HandlerTimeout(ConsumerError):
    """A handler ran past `RetryPolicy.handler_timeout` (CONSUMER_HANDLER_TIMEOUT_SECONDS); its transaction
    was rolled back and the try counts as failed."""


class MigrationError(ConsumerError):
    """A migration's SQL failed at start; its transaction was rolled back, so none of it was applied."""


class Permanent(Exception):
    """Raise from a handler when retrying cannot help: the message is parked at once."""


class MalformedEvent(Permanent):
    """The message body is not a JSON object, so no handler can make sense of it."""
