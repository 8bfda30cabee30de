#!/usr/bin/env bash
# The main job on one machine: the gateway and the two example consumers against a local RabbitMQ.
# Ctrl-C (or SIGTERM) stops all three gracefully.
set -euo pipefail
cd "$(dirname "$0")/../.."

AMQP_URL="$(deploy/local/broker.sh)"
export AMQP_URL
export TRADEVINE_CONSUMER_SECRET="${TRADEVINE_CONSUMER_SECRET:-local-dev-secret}"
export GATEWAY_PORT="${GATEWAY_PORT:-8080}"
state="${TRADEVINE_STATE_DIR:-.run}"
mkdir -p "$state"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

.venv/bin/tradevine-gateway serve &
pids+=($!)
CONSUMER_DATABASE="$state/inventory.sqlite3" CONSUMER_HTTP_PORT="${INVENTORY_HTTP_PORT:-8081}" \
  .venv/bin/tradevine-consumers run inventory &
pids+=($!)
CONSUMER_DATABASE="$state/orders.sqlite3" CONSUMER_HTTP_PORT="${ORDERS_HTTP_PORT:-8082}" \
  .venv/bin/tradevine-consumers run orders &
pids+=($!)

cat >&2 <<MSG

  gateway    http://127.0.0.1:${GATEWAY_PORT}/webhooks/tradevine   (probes: /healthz /readyz /metrics)
  inventory  http://127.0.0.1:${INVENTORY_HTTP_PORT:-8081}/metrics   state: $state/inventory.sqlite3
  orders     http://127.0.0.1:${ORDERS_HTTP_PORT:-8082}/metrics   state: $state/orders.sqlite3

  Send a signed test event from another terminal:
    .venv/bin/tradevine-gateway send-test-event --event product.created --secret '${TRADEVINE_CONSUMER_SECRET}'

MSG
# Stop everything as soon as one of the three exits.
wait -n
