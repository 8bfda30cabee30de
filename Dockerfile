# One image for every role: the gateway (default command), the consumers and the reconciler.
#   make image          (deploy/image/build.sh: wheels resolved on the host, then docker build; offline
#                        it builds a local Python base from Debian packages, --build-arg BASE_IMAGE=...)
#   docker run --rm -p 8080:8080 -e TRADEVINE_CONSUMER_SECRET=... IMAGE                   # gateway
#   docker run --rm IMAGE tradevine-consumers run inventory                               # a consumer
#   docker run --rm IMAGE tradevine-gateway reconcile --lookback 2h                       # reconciler
# Kubernetes manifests (deploy/) set command and args explicitly for each workload.

# The same base for both stages: the venv links to the base's python3.11. The official image by default;
# any base with python3.11 and its venv module works (make image builds one from Debian packages offline).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# --- builder: a venv installed only from the wheels make image resolved (build/image/wheels)
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY build/image/wheels/ /wheels/

# With the `postgres` extra (psycopg): consumers may keep their state in PostgreSQL (CONSUMER_DATABASE);
# with `otel`: tracing, when the OTEL_* variables turn it on.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-index --find-links /wheels \
        "tradevine-gateway[postgres,otel]" \
 && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

# --- runtime: the base image, the venv, a non-root user; no compilers, no pip, no caches
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="tradevine-gateway" \
      org.opencontainers.image.description="Tradevine webhook gateway, RabbitMQ consumers and reconciler"

# pip, setuptools and wheel are not needed at run time: remove them from the system interpreter.
# /var/lib/tradevine: the working directory, where consumers keep SQLite by default (mount a volume).
RUN (python3 -m pip uninstall --yes pip setuptools wheel 2>/dev/null || true) \
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
