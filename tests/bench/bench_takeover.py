"""takeover: how long a crashed leader's work stops, with leader election at its defaults
(--lease-duration 10, --renew-deadline 6, --retry-period 2), on the real control plane.

Two `streamherd run --leader-election` replicas and one ConsumerGroup; the leader is killed
with SIGKILL (no release), and the gap runs from the kill to the new leader's first Redis
command (MONITOR, attributed to processes by their sockets, as tests/leadership does): the
time the group goes unwatched. Repeated ROUNDS times (a new standby started each round); also
the graceful handover (SIGTERM: loops stopped, Lease released). The issue's goal: takeover_s
<= 15. Prints one JSON line: {"takeover_s": max, "takeover_median_s", "handover_s": ...}.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from e2e.cluster.objects import ClusterObjects, apply_crds
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port
from e2e.controlplane.controlplane import ControlPlane
from tests.leadership.writers import RedisWriters

ROUNDS = 4
NS = "default"
LEASE = "streamherd-bench"


def replica(kubeconfig: Path, workdir: Path, name: str) -> OperatorProcess:
    argv = [
        "streamherd",
        "run",
        "--metrics-port",
        "0",
        "--health-port",
        str(free_port()),
        "--leader-election",
        "--leader-election-namespace",
        NS,
        "--leader-election-id",
        LEASE,
    ]
    proc = OperatorProcess(
        argv, kubeconfig=kubeconfig, log_path=workdir / f"{name}.log", env={"POD_NAME": name}
    )
    return proc.start()


def first_command(writers: RedisWriters, name: str, after: float, timeout: float = 60) -> float:
    return wait_until(lambda: writers.first_after(name, after), timeout) - after


def main() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    plane = ControlPlane().start()
    redis_server = RedisServer().start()
    procs: list[OperatorProcess] = []
    try:
        kubeconfig = plane.kubeconfig()
        apply_crds(kubeconfig, Path(__file__).resolve().parents[2] / "crds")
        api = ClusterObjects(kubeconfig)
        group = "streamherd.io/v1alpha1"
        api.create(
            {
                "apiVersion": group,
                "kind": "RedisStream",
                "metadata": {"name": "orders", "namespace": NS},
                "spec": {"redis": {"url": redis_server.url}, "key": "orders"},
            }
        )
        api.create(
            {
                "apiVersion": group,
                "kind": "ConsumerGroup",
                "metadata": {"name": "workers", "namespace": NS},
                "spec": {"streamRef": {"name": "orders"}},
            }
        )
        writers = RedisWriters(redis_server.host, redis_server.port).start()
        leader = replica(kubeconfig, workdir, "r0")
        procs.append(leader)
        writers.pids["r0"] = leader.pid
        first_command(writers, "r0", 0)
        takeovers, handovers = [], []
        for n in range(1, ROUNDS + 1):
            standby = replica(kubeconfig, workdir, f"r{n}")
            procs.append(standby)
            writers.pids[f"r{n}"] = standby.pid
            standby.wait_for_log("stands by", 60)
            time.sleep(3)  # a few renewals seen by the standby, as in a steady state
            at = time.time()
            if n == ROUNDS:  # the last round: a graceful handover instead
                leader.stop(30)
                handovers.append(first_command(writers, f"r{n}", at))
            else:
                leader.signal(9)
                takeovers.append(first_command(writers, f"r{n}", at))
            leader = standby
        assert writers.overlaps == [], writers.overlaps
        writers.stop()
        return {
            "rounds": ROUNDS - 1,
            "takeover_s": round(max(takeovers), 2),
            "takeover_median_s": round(statistics.median(takeovers), 2),
            "handover_s": round(max(handovers), 2),
            "lease_duration_s": 10,
            "retry_period_s": 2,
        }
    finally:
        for proc in procs:
            proc.stop()
        redis_server.stop()
        plane.stop()


if __name__ == "__main__":
    print(json.dumps(main()))
