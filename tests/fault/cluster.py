"""A 3-node RabbitMQ cluster loses the node holding the gateway's connection and the queues' leader.

    make fault-cluster

Starts three nodes of the installed RabbitMQ (as root; each its own node name, AMQP and distribution
ports, data and log directories, never the shared `rabbit@localhost`), joins them into one cluster, and
runs the gateway and `tradevine-consumers run inventory` / `orders` with one multi-address AMQP_URL
(docs/contract.md#several-rabbitmq-addresses), the first node first: it holds their connections and
the leaders of the consumers' quorum queues. Under a steady load (FAULT_RATE, default 30/s) it SIGKILLs
that node, restarts it after FAULT_DOWN_SECONDS (default 10), keeps the load FAULT_AFTER_SECONDS (20)
longer, waits for the consumers to drain, tears everything down and prints one JSON line:
accepted, lost (answered 200, in neither store), duplicates_applied (inventory products applied twice:
stock rows beyond one per product), non2xx, recovered_s (from the kill until a request sent after it is
answered 200: the first 200 to a request sent after the last one that failed), failing_s (from the kill
to the last failed request), and which node held what.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.soak import SteadyLoad, applied  # noqa: E402
from tests.integration.brokers import RABBITMQ_BIN, ScratchBroker  # noqa: E402
from tests.integration.consumer_helpers import ConsumerProcess  # noqa: E402
from tests.integration.processes import GatewayProcess  # noqa: E402


def node_pid(broker: ScratchBroker) -> int:
    assert broker._dir is not None
    return int((broker._dir / "pid").read_text().strip())


def restart(broker: ScratchBroker) -> None:
    broker._as_rabbitmq(f"{RABBITMQ_BIN}/rabbitmq-server -detached")
    broker._as_rabbitmq(f"{RABBITMQ_BIN}/rabbitmqctl -n {broker._node} wait {broker._dir}/pid --timeout 60",
                        timeout=90)


def main() -> int:
    rate = float(os.environ.get("FAULT_RATE", "30"))
    down = float(os.environ.get("FAULT_DOWN_SECONDS", "10"))
    after = float(os.environ.get("FAULT_AFTER_SECONDS", "20"))
    work = Path(tempfile.mkdtemp(prefix="tv-fault-cluster-"))
    unique = f"cluster-{os.getpid()}"
    exchange = f"fault.{unique}"
    nodes = [ScratchBroker(), ScratchBroker(), ScratchBroker()]
    consumers: dict[str, ConsumerProcess] = {}
    result: dict[str, object] = {}
    try:
        for node in nodes:
            node.__enter__()
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", str(nodes[0]._node))
            node.ctl("start_app")
            node.ctl("await_startup")
        url = "amqp://guest:guest@" + ",".join(f"127.0.0.1:{n.port}" for n in nodes) + "/?heartbeat=5"
        for name in ("inventory", "orders"):
            env = {"AMQP_URL": url, "GATEWAY_EXCHANGE": exchange, "CONSUMER_QUEUE": f"{name}-{unique}",
                   "CONSUMER_DATABASE": str(work / f"{name}.sqlite3"), "CONSUMER_HTTP_PORT": "0"}
            consumers[name] = ConsumerProcess(name, env, work / f"{name}.log").start()
        with GatewayProcess(url, exchange, log_path=work / "gateway.log") as gateway:
            deadline = time.monotonic() + 30
            leaders = ""
            while time.monotonic() < deadline:
                leaders = nodes[0].ctl("list_queues", "name", "leader", "members", "--quiet")
                if all(f"{name}-{unique}\t" in leaders for name in consumers):
                    break
                time.sleep(0.5)
            connections = nodes[0].ctl("list_connections", "client_properties", "--quiet")
            result["leaders_before"] = sorted(line for line in leaders.splitlines() if unique in line
                                              and ".retry." not in line and not line.split("\t")[0].endswith("parked"))
            result["killed_node"] = nodes[0]._node
            result["gateway_on_killed_node"] = "tradevine-gateway" in connections
            load = SteadyLoad(gateway.url, rate)
            load.start()
            time.sleep(10)
            killed_at = time.monotonic()
            os.kill(node_pid(nodes[0]), signal.SIGKILL)
            time.sleep(down)
            restart(nodes[0])
            time.sleep(max(0.0, killed_at + down + after - time.monotonic()))
            load.stop()
        # Recovered: the first 200 to a request sent after the last failure that followed the kill (the
        # first 200 alone could be a request that the broker confirmed before the connection noticed).
        failed = [a[0] for a in load.answers if a[0] > killed_at and a[2] != 200]
        since = max(failed, default=killed_at)
        recovered = sorted(a[0] + a[1] for a in load.answers if a[0] > since and a[2] == 200)
        result["recovered_s"] = round(recovered[0] - killed_at, 2) if recovered else None
        result["failing_s"] = round(since - killed_at, 2) if failed else 0.0
        accepted = {a[3] for a in load.answers if a[2] == 200}
        stored: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stored = applied(work / "inventory.sqlite3") | applied(work / "orders.sqlite3")
            if accepted <= stored:
                break
            time.sleep(1)
        time.sleep(3)
        import sqlite3
        with sqlite3.connect(work / "inventory.sqlite3") as db:
            rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT message_id) FROM consumer_applied").fetchone()
        result = {"accepted": len(accepted), "lost": len(accepted - stored),
                  "duplicates_applied": rows[0] - rows[1],
                  "non2xx": sum(1 for a in load.answers if a[2] != 200), **result}
    finally:
        for process in consumers.values():
            process.stop()
        for node in nodes:
            try:
                node.close()
            except Exception as exc:  # a node that is down already
                print(f"closing {node._node}: {exc}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
