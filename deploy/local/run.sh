#!/usr/bin/env bash
# The main job on one machine: the gateway and the two example consumers against a local RabbitMQ.
# Prints one "ready" line once every service answers /readyz; Ctrl-C (or SIGTERM) stops all three
# gracefully and prints "stopped". Ports: GATEWAY_PORT, INVENTORY_HTTP_PORT, ORDERS_HTTP_PORT; state
# (the consumers' SQLite files): TRADEVINE_STATE_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

export TRADEVINE_CONSUMER_SECRET="${TRADEVINE_CONSUMER_SECRET:-local-dev-secret}"
export GATEWAY_PORT="${GATEWAY_PORT:-8080}"
inventory_port="${INVENTORY_HTTP_PORT:-8081}"
orders_port="${ORDERS_HTTP_PORT:-8082}"
state="${TRADEVINE_STATE_DIR:-.run}"
py=.venv/bin/python

# Every port free before anything starts; a taken one is named with the variable that moves it.
if ! "$py" - "$GATEWAY_PORT" "$inventory_port" "$orders_port" <<'PY'
import sys
from gateway.wire import port_in_use
names = ("GATEWAY_PORT", "INVENTORY_HTTP_PORT", "ORDERS_HTTP_PORT")
problems = []
for name, text in zip(names, sys.argv[1:]):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        problems.append(f"{name}={text!r} is not a port number; try {8080 + names.index(name)}.")
    elif problem := port_in_use("127.0.0.1", int(text), name):
        problems.append(problem)
for problem in problems:
    print(f"make run: {problem}", file=sys.stderr)
sys.exit(2 if problems else 0)
PY
then
  exit 2
fi

AMQP_URL="$(deploy/local/broker.sh)"
export AMQP_URL
mkdir -p "$state"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped" >&2
}
trap stop INT TERM EXIT

.venv/bin/tradevine-gateway serve &
pids+=($!)
CONSUMER_DATABASE="$state/inventory.sqlite3" CONSUMER_HTTP_PORT="$inventory_port" \
  .venv/bin/tradevine-consumers run inventory &
pids+=($!)
CONSUMER_DATABASE="$state/orders.sqlite3" CONSUMER_HTTP_PORT="$orders_port" \
  .venv/bin/tradevine-consumers run orders &
pids+=($!)

# Wait for every /readyz (or for one of the three to exit, which ends the run).
"$py" - "$GATEWAY_PORT" "$inventory_port" "$orders_port" "${pids[@]}" <<'PY' &
import os, sys, time, urllib.request
ports, pids = sys.argv[1:4], [int(p) for p in sys.argv[4:]]
while True:
    def gone(pid):  # exited: no /proc entry, or a zombie not yet reaped
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True
    if any(gone(pid) for pid in pids):
        sys.exit(1)
    try:
        if all(urllib.request.urlopen(f"http://127.0.0.1:{p}/readyz", timeout=1).status == 200 for p in ports):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
PY
waiter=$!
if wait "$waiter"; then
  cat >&2 <<MSG

  ready in ${SECONDS}s (from the start of make run): gateway http://127.0.0.1:${GATEWAY_PORT}/webhooks/tradevine  inventory http://127.0.0.1:${inventory_port}/metrics  orders http://127.0.0.1:${orders_port}/metrics
  state: $state/inventory.sqlite3, $state/orders.sqlite3 — Ctrl-C stops everything.
  Send a signed test event from another terminal:
    .venv/bin/tradevine-gateway send-test-event --event product.created --secret '${TRADEVINE_CONSUMER_SECRET}' --url http://127.0.0.1:${GATEWAY_PORT}/webhooks/tradevine

MSG
fi
# Stop everything as soon as one of the three exits.
wait -n "${pids[@]}"
