#!/usr/bin/env bash
# Make sure a RabbitMQ is reachable and print its AMQP URL on stdout (messages go to stderr).
# Order: $AMQP_URL if set; a broker already on 127.0.0.1:5672; the local rabbitmq-server, started;
# a Docker container from the official image; otherwise explain how to get one and fail.
set -euo pipefail

say() { echo "broker: $*" >&2; }
local_url="amqp://guest:guest@127.0.0.1:5672/"
image="${RABBITMQ_IMAGE:-rabbitmq:3.13-management}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/5672") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 120); do
    if port_open; then return 0; fi
    sleep 0.5
  done
  return 1
}

if [[ -n "${AMQP_URL:-}" ]]; then
  say "using AMQP_URL from the environment"
  echo "$AMQP_URL"
  exit 0
fi

if port_open; then
  say "RabbitMQ answers on 127.0.0.1:5672"
  echo "$local_url"
  exit 0
fi

if command -v rabbitmq-server >/dev/null 2>&1; then
  say "starting the local rabbitmq-server"
  if [[ $(id -u) -eq 0 ]]; then rabbitmq-server -detached; else sudo -n rabbitmq-server -detached; fi
  if command -v rabbitmq-diagnostics >/dev/null 2>&1; then
    rabbitmq-diagnostics -q ping --timeout 60 >/dev/null 2>&1 || true
  fi
  if wait_port; then
    echo "$local_url"
    exit 0
  fi
  say "rabbitmq-server did not open port 5672 within 60 s; see /var/log/rabbitmq/"
  exit 1
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  say "starting $image in Docker as tradevine-rabbitmq"
  if ! docker start tradevine-rabbitmq >/dev/null 2>&1; then
    docker run -d --name tradevine-rabbitmq -p 127.0.0.1:5672:5672 -p 127.0.0.1:15672:15672 "$image" >/dev/null
  fi
  if wait_port && docker exec tradevine-rabbitmq rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
    echo "$local_url"
    exit 0
  fi
  say "the container did not become ready; see: docker logs tradevine-rabbitmq"
  exit 1
fi

cat >&2 <<'MSG'
broker: no RabbitMQ found. Any one of these works:
  - install it:      sudo apt-get install rabbitmq-server   (Debian/Ubuntu), then run this again
  - start Docker:    the official rabbitmq:3.13-management image is then started for you
  - point at one:    export AMQP_URL=amqp://user:password@host:5672/
MSG
exit 1
