"""A certificate authority and a server certificate made for one test, with Debian's `openssl`.

`make_authority(directory, name)` writes `NAME-ca.pem` (self-signed CA) and a certificate for
`localhost` / `127.0.0.1` signed by it. Elliptic-curve keys keep this to a few milliseconds; the
extensions are the ones Python's strict X.509 verification expects of a CA and a server.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = """\
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class ServerCertificate:
    """The CA certificate that signed `cert`, and the server's certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    assert OPENSSL is not None, "openssl is not installed"
    done = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def make_authority(directory: Path, name: str) -> ServerCertificate:
    """A new CA called `name` and a localhost server certificate it signed, under `directory`."""
    ca, ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
    cert, key, request = (directory / f"{name}-server{suffix}" for suffix in (".pem", ".key", ".csr"))
    extensions = directory / f"{name}-server.ext"
    extensions.write_text(_SERVER_EXTENSIONS)
    _openssl("req", "-x509", *_KEY, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN={name} test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *_KEY, "-keyout", key, "-out", request, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", extensions)
    return ServerCertificate(ca=ca, cert=cert, key=key)
