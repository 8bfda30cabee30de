"""Tradevine webhook gateway: verify, then publish durably to RabbitMQ."""

__version__ = "0.1.0"
