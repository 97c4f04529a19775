"""poll_cost: the operator's steady-state Redis commands per second for one idle and one
busy group at one replica, default settings (pollInterval 2 s), each on its own redis-server
so INFO commandstats tells them apart.

idle: no entry arrives; busy: 100 entries/s arrive and the group keeps up (this script's
own consumer reads and acks them). This script's commands (XADD, XREADGROUP, XACK, INFO) are
left out of the counts; what remains is the operator's. Over WINDOW seconds after a warm-up.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port

NS = "default"
WINDOW = 30.0
WARM_UP = 6.0
RATE = 100
OURS = {"xadd", "xreadgroup", "xack", "info"}


def custom(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "none"}]},
            },
        },
    }


def commands(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name.removeprefix("cmdstat_").split("|")[0] not in OURS
    }


def main() -> dict[str, Any]:
    cluster = LocalCluster().start()
    servers = {name: RedisServer("7.0").start() for name in ("idle", "busy")}
    clients = {n: redis.Redis.from_url(s.url, decode_responses=True) for n, s in servers.items()}
    api = cluster.api
    workdir = Path(tempfile.mkdtemp(prefix="bench-poll-cost-"))
    kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig")
    stop = threading.Event()
    operator = None

    def produce() -> None:
        r = redis.Redis.from_url(servers["busy"].url)
        n = 0
        started = time.monotonic()
        while not stop.is_set():
            r.xadd("busy", {"n": n})
            n += 1
            time.sleep(max(0.0, started + n / RATE - time.monotonic()))

    def consume() -> None:
        r = redis.Redis.from_url(servers["busy"].url)
        while not stop.is_set():
            try:
                reply = r.xreadgroup("busy", "c1", {"busy": ">"}, count=100, block=100)
            except redis.ResponseError:  # the group is not there yet
                time.sleep(0.1)
                continue
            for _, entries in reply or []:
                if entries:
                    r.xack("busy", "busy", *[entry_id for entry_id, _ in entries])

    try:
        for name, server in servers.items():
            api.create(deployment(name))
            api.create(custom("RedisStream", name, {"redis": {"url": server.url}, "key": name}))
            api.create(
                custom(
                    "ConsumerGroup",
                    name,
                    {
                        "streamRef": {"name": name},
                        "consumers": {"deploymentRef": {"name": name}},
                        "autoscaling": {
                            "minReplicas": 1,
                            "maxReplicas": 4,
                            "targetPerReplica": 100,
                        },
                    },
                )
            )
        operator = OperatorProcess(
            [
                "streamherd",
                "run",
                "--metrics-port",
                str(free_port()),
                "--health-port",
                str(free_port()),
                "--log-level",
                "WARNING",
            ],
            kubeconfig=kubeconfig,
            log_path=workdir / "operator.log",
        ).start()
        for name in servers:
            wait_until(
                lambda name=name: (
                    (api.get("consumergroups.streamherd.io", NS, name) or {})
                    .get("status", {})
                    .get("desiredReplicas")
                    is not None
                ),
                60,
            )
        threads = [threading.Thread(target=f, daemon=True) for f in (produce, consume)]
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP)
        before = {n: commands(r) for n, r in clients.items()}
        started = time.monotonic()
        time.sleep(WINDOW)
        after = {n: commands(r) for n, r in clients.items()}
        elapsed = time.monotonic() - started
        replicas = {n: int(api.get("deployments.apps", NS, n)["spec"]["replicas"]) for n in servers}
    finally:
        stop.set()
        if operator is not None:
            operator.stop()
        cluster.stop()
        for server in servers.values():
            server.cleanup()
    out: dict[str, Any] = {}
    for name in servers:
        delta = {
            c: after[name][c] - before[name].get(c, 0)
            for c in after[name]
            if after[name][c] > before[name].get(c, 0)
        }
        out[f"{name}_cmds_per_s"] = round(sum(delta.values()) / elapsed, 2)
        out[f"{name}_by_command_per_s"] = {
            c: round(n / elapsed, 2) for c, n in sorted(delta.items())
        }
    out["busy_arrivals_per_s"] = RATE
    out["replicas"] = replicas
    out["window_s"] = round(elapsed, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
