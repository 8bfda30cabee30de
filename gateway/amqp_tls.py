"""TLS to RabbitMQ: the AMQP_URL query parameters, checked at start, and failed connections in one line.

An `amqps://` URL turns TLS on, with the server's certificate and host name verified against the
system's CAs. aio-pika (aiormq) reads these query parameters of the URL:

    cafile=PATH      the CA certificate(s) that signed the broker's certificate (PEM)
    capath=DIR       a directory of hashed CA certificates, instead of cafile
    certfile=PATH    a client certificate (PEM), for brokers that ask for one
    keyfile=PATH     its private key, when not inside certfile
    no_verify_ssl=1  turn verification off (never in production)

e.g. `amqps://gateway:PASSWORD@rabbitmq.tradevine.svc:5671/?cafile=/etc/rabbitmq-tls/ca.crt`.
Standard library only: settings use it before anything imports aio-pika.
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import parse_qs, urlsplit

TLS_PARAMETERS = ("cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl")
_FILES = ("cafile", "certfile", "keyfile")


def tls_problems(url: str, name: str = "AMQP_URL") -> list[str]:
    """What is wrong with the TLS parameters of `url` (missing files, TLS options on amqp://), each with a fix."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    problems: list[str] = []
    given = [key for key in TLS_PARAMETERS if key in query]
    if given and parts.scheme != "amqps":
        problems.append(f"{name} sets {', '.join(given)} but starts with {parts.scheme}://, which is not "
                        "TLS; use amqps:// (port 5671).")
    for key in _FILES:
        for value in query.get(key, []):
            if not (os.path.isfile(value) and os.access(value, os.R_OK)):
                problems.append(f"{name}: {key}={value!r} is not a readable file; mount the certificate "
                                "there (e.g. from the broker's TLS Secret) or correct the path.")
    for value in query.get("capath", []):
        if not os.path.isdir(value):
            problems.append(f"{name}: capath={value!r} is not a directory; use cafile=/path/to/ca.crt instead.")
    if "keyfile" in query and "certfile" not in query:
        problems.append(f"{name} sets keyfile without certfile; give both (a client certificate and its key).")
    for value in query.get("no_verify_ssl", []):
        if value not in ("0", "1"):
            problems.append(f"{name}: no_verify_ssl={value!r} is not 0 or 1; leave it out (verification on).")
    return problems


def tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc` (aiormq wraps it in AMQPConnectionError), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def connect_error_text(exc: BaseException) -> str:
    """One line for a failed connection; a TLS failure says so, names the cause and the fix."""
    found = tls_error(exc)
    if isinstance(found, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed ({found.verify_message}): the broker's certificate "
                "must be signed by the CA in AMQP_URL's cafile= (the system's CAs when unset) and name the "
                "host in AMQP_URL.")
    if found is not None:
        return (f"TLS handshake failed ({found.reason or found}): check that the port speaks TLS (5671 "
                "for amqps://) and AMQP_URL's cafile=, certfile=, keyfile=.")
    return f"{type(exc).__name__}: {exc}"
