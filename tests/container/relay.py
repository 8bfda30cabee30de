"""A TCP relay on the host, so containers reach a server that listens on the host's loopback only.

The host's PostgreSQL (deploy/local/postgres.sh) listens on 127.0.0.1; containers on a Docker network
reach the host at the network's gateway address. `relaying(gateway_address, ("127.0.0.1", 5432))`
accepts there and copies bytes both ways, so a container connects as a pod connects to its database
service, and the server still sees a loopback client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def _pump(source: socket.socket, sink: socket.socket, done: threading.Barrier) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)  # the other side sees end of stream, as without the relay
    if done.wait() == 0:  # the last of the two directions closes both sockets
        source.close()
        sink.close()


@contextlib.contextmanager
def relaying(listen_host: str, target: tuple[str, int]) -> Iterator[int]:
    """Relay connections to `listen_host` (a free port, yielded) to `target`, until the block ends."""
    server = socket.create_server((listen_host, 0))
    server.settimeout(0.2)  # a blocked accept() would not notice the block's end
    stop = threading.Event()
    open_sockets: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            open_sockets.extend((client, upstream))
            done = threading.Barrier(2)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink, done), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        server.close()
        for one in open_sockets:
            with contextlib.suppress(OSError):
                one.shutdown(socket.SHUT_RDWR)
            one.close()
