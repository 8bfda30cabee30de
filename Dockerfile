# syntax=docker/dockerfile:1
# One image for every role: the gateway (default command), the consumers and the reconciler.
#   docker build -t ghcr.io/tradevine-gateway/tradevine-gateway:0.1.0 .
#   docker run --rm -p 8080:8080 -e TRADEVINE_CONSUMER_SECRET=... IMAGE                   # gateway
#   docker run --rm IMAGE tradevine-consumers run inventory                               # a consumer
#   docker run --rm IMAGE tradevine-gateway reconcile --lookback 2h                       # reconciler
# Kubernetes manifests (deploy/) set command and args explicitly for each workload.

# --- builder: wheels for the project and all its dependencies, then a venv installed from them only
# The same pinned base for both stages: the venv links to its /usr/local/bin/python3.11.
FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# README.md is package metadata (pyproject readme); a LICENSE file is copied when present.
COPY pyproject.toml README* LICENSE* ./
COPY gateway/ gateway/
COPY consumers/ consumers/

# With the `postgres` extra (asyncpg): consumers may keep their state in PostgreSQL (CONSUMER_DATABASE).
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]" \
 && python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --find-links /wheels "tradevine-gateway[postgres]"

# --- runtime: the base image, the venv, a non-root user; no compilers, no pip, no caches
FROM python:3.11.13-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="tradevine-gateway" \
      org.opencontainers.image.description="Tradevine webhook gateway, RabbitMQ consumers and reconciler"

# pip, setuptools and wheel are not needed at run time: remove them from the system interpreter.
# /var/lib/tradevine: the working directory, where consumers keep SQLite by default (mount a volume).
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 tradevine \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tradevine \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/tradevine

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    CONSUMER_HTTP_HOST=0.0.0.0 \
    CONSUMER_HTTP_PORT=8081

WORKDIR /var/lib/tradevine
USER 10001:10001
EXPOSE 8080 8081

# No ENTRYPOINT: the command line picks the role, and the default is the gateway.
CMD ["tradevine-gateway", "serve"]
