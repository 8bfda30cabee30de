"""Several addresses of one RabbitMQ cluster in one AMQP_URL, tried in turn on connect and reconnect.

    amqp://user:password@rabbit-0:5672,rabbit-1:5672,rabbit-2/vhost?heartbeat=10

One scheme, one user and password, one vhost and one query (TLS files, heartbeat) for every node;
the hosts (each `host`, `host:port` or `[v6]:port`; port 5672, or 5671 for amqps, when left out) are
separated by commas. A single address is an ordinary URL. `split_addresses` (standard library only)
is what settings use to check the value; `connect_robust` and `connect` are aio-pika's, except that a
failed attempt, or a lost connection, moves on to the next address.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


class AddressError(ValueError):
    """AMQP_URL's host list cannot be read; the message names the bad part (never the password)."""


def split_addresses(url: str) -> list[str]:
    """One URL per host of `url`'s comma-separated host list, in the order given."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("amqp", "amqps"):
        raise AddressError("does not start with amqp:// or amqps://")
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    prefix = f"{scheme}://{userinfo}{at}"
    addresses: list[str] = []
    for host in hosts.split(","):
        host = host.strip()
        if not host:
            raise AddressError("has an empty host in its comma-separated host list")
        address = prefix + host + tail
        parts = urlsplit(address)
        try:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number in 0..65535
        except ValueError:
            raise AddressError(f"has a bad port in host {host!r}") from None
        if not parts.hostname:
            raise AddressError(f"has no host name in {host!r}")
        addresses.append(address)
    return addresses


def _robust_class() -> type:
    from aio_pika import RobustConnection

    class ClusterConnection(RobustConnection):
        """A RobustConnection whose every new connection attempt goes to the next address in turn.

        aio-pika's reconnect loop clears `transport` right before each attempt (and on close), then
        connects to `self.url`: each attempt after the first moves `self.url` to the next address,
        so a dead node costs one failed attempt (reconnect_interval), and a node that drops the
        connection is not the first one tried again.
        """

        addresses: tuple[str, ...] = ()
        _index = -1

        @property
        def transport(self) -> Any:
            return self.__dict__.get("_cluster_transport")

        @transport.setter
        def transport(self, value: Any) -> None:
            if value is None and self.addresses and "_cluster_transport" in self.__dict__:
                self._index = (self._index + 1) % len(self.addresses)
                from yarl import URL
                self.url = URL(self.addresses[self._index])
            self.__dict__["_cluster_transport"] = value

    return ClusterConnection


async def connect_robust(url: str, **kwargs: Any) -> Any:
    """aio_pika.connect_robust over every address of `url`: the first that answers, then in turn on reconnect."""
    import aio_pika

    addresses = split_addresses(url)
    if len(addresses) == 1:
        return await aio_pika.connect_robust(url, **kwargs)
    base = _robust_class()
    error: BaseException | None = None
    for start in range(len(addresses)):
        # Starting at `start`: the constructor's own None counts as the first step.
        order = tuple(addresses[start:] + addresses[:start])
        cls = type("ClusterConnection", (base,), {"addresses": order, "_index": -1})
        try:
            return await aio_pika.connect_robust(order[0], connection_class=cls, **kwargs)
        except Exception as exc:
            error = exc
    assert error is not None
    raise error


async def connect(url: str, **kwargs: Any) -> Any:
    """aio_pika.connect to the first address of `url` that answers."""
    import aio_pika

    error: BaseException | None = None
    for address in split_addresses(url):
        try:
            return await aio_pika.connect(address, **kwargs)
        except Exception as exc:
            error = exc
    assert error is not None
    raise error
