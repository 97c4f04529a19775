"""e2e-burst: 50,000 events at once on a group at zero replicas, drained by real consumer
processes (e2e/consumer.py, the SDK) of a fixed work time, run by the simulated kubelet,
scaled by the operator (`streamherd run`). How much consumer time the autoscaler spends:

  replica_seconds        running consumer pods integrated over time, from the burst until
                         the Deployment is back at zero
  ideal_replica_seconds  events x work time: what the work itself needs
  drain_s                from the burst until every event is processed (checked by message)
  lost                   events never processed (by message): must be 0

Goal (issue 16): replica_seconds <= 1.5 x ideal. Also reported: how fast the replicas came
(first_replica_s, max_replicas_s), the replica-seconds spent after the drain (tail), and the
ratio. The group is the example's brain made bursty: scale to zero, targetDrainTime, a short
scale-down window and idleBeforeZero (a 5 min window would hold every replica for 5 min).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
from e2e import consumer
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port

NS = "default"
GROUP = "burst"
DEPLOYMENT = "burst-workers"


def autoscaling(max_replicas: int) -> dict[str, object]:
    return {
        "minReplicas": 0,
        "maxReplicas": max_replicas,
        "targetPerReplica": 500,
        "targetDrainTime": "20s",
        "pollInterval": "1s",
        "scaleDown": {"stabilizationWindow": "5s"},
        "idleBeforeZero": "5s",
    }


class Pods(threading.Thread):
    """Samples the running consumer pods every 50 ms: the integral is replica-seconds."""

    def __init__(self, kubelet: object) -> None:
        super().__init__(daemon=True)
        self.kubelet = kubelet
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def running(self) -> int:
        return sum(1 for p in self.kubelet.processes(NS) if p.startswith(DEPLOYMENT))  # type: ignore[attr-defined]

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.running()))
            self.stop.wait(0.05)

    def replica_seconds(self, start: float, end: float) -> float:
        total = 0.0
        for (t0, n), (t1, _) in zip(self.samples, self.samples[1:], strict=False):
            lo, hi = max(t0, start), min(t1, end)
            if hi > lo:
                total += n * (hi - lo)
        return total


def main(events: int, work_ms: int, max_replicas: int) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="streamherd-bench-burst-"))
    server = RedisServer("7.0").start()
    cluster = LocalCluster().start()
    kubelet = cluster.start_kubelet(log_dir=workdir / "pods", stop_grace=1.0)
    kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig")
    operator = OperatorProcess(
        ["streamherd", "run", "--metrics-port", "0", "--health-port", str(free_port())],
        kubeconfig=kubeconfig,
        log_path=workdir / "operator.log",
    )
    r = redis.Redis.from_url(server.url, decode_responses=True)
    pods = Pods(kubelet)
    try:
        cluster.api.create(
            consumer.deployment(
                DEPLOYMENT,
                redis_url=server.url,
                group=GROUP,
                stream="burst",
                env={"WORK_MS": str(work_ms), "BATCH": "10", "MODE": "history"},
            )
        )
        base = {"apiVersion": "streamherd.io/v1alpha1", "metadata": {"namespace": NS}}
        cluster.api.create(
            {
                **base,
                "kind": "RedisStream",
                "metadata": {"name": "burst", "namespace": NS},
                "spec": {"redis": {"url": server.url}, "key": "burst"},
            }
        )
        cluster.api.create(
            {
                **base,
                "kind": "ConsumerGroup",
                "metadata": {"name": GROUP, "namespace": NS},
                "spec": {
                    "streamRef": {"name": "burst"},
                    "startId": "0",
                    "consumers": {"deploymentRef": {"name": DEPLOYMENT}},
                    "autoscaling": autoscaling(max_replicas),
                    "recovery": {"strategy": "Claim", "minIdle": "30s", "interval": "5s"},
                },
            }
        )
        operator.start()

        def status() -> dict[str, object]:
            obj = cluster.api.get("consumergroups.streamherd.io", NS, GROUP) or {}
            return obj.get("status") or {}

        wait_until(
            lambda: status().get("desiredReplicas") == 0,
            60,
            message=lambda: operator.logs()[-3000:],
        )
        pods.start()
        sent: set[str] = set()
        started = time.monotonic()
        for first in range(0, events, 5000):
            pipe = r.pipeline(transaction=False)
            for n in range(first, min(events, first + 5000)):
                msg = f"e{n}"
                pipe.xadd("burst", {"msg": msg})
                sent.add(msg)
            pipe.execute()
        written = time.monotonic() - started
        wait_until(
            lambda: r.scard(f"processed:{GROUP}") >= events,
            events * work_ms / 1000 + 300,
            interval=0.1,
            message=lambda: f"processed {r.scard(f'processed:{GROUP}')}/{events}",
        )
        drained = time.monotonic()
        wait_until(lambda: pods.running() == 0, 300, interval=0.1)
        ended = time.monotonic()
        time.sleep(0.2)
        pods.stop.set()
        pods.join()
        processed = r.smembers(f"processed:{GROUP}")
        first_replica = next(t for t, n in pods.samples if n > 0) - started
        peak = max(n for _, n in pods.samples)
        peak_at = next(t for t, n in pods.samples if n == peak) - started
        replica_seconds = pods.replica_seconds(started, ended)
        tail = pods.replica_seconds(drained, ended)
        ideal = events * work_ms / 1000
        return {
            "events": events,
            "drain_s": round(drained - started, 1),
            "max_replicas": peak,
            "replica_seconds": round(replica_seconds, 1),
            "ideal_replica_seconds": round(ideal, 1),
            "lost": len(sent - processed),
            "ratio": round(replica_seconds / ideal, 2),
            "work_ms": work_ms,
            "max_replicas_allowed": max_replicas,
            "write_s": round(written, 2),
            "first_replica_s": round(first_replica, 1),
            "max_replicas_s": round(peak_at, 1),
            "tail_replica_seconds": round(tail, 1),
            "scale_events": [
                e["message"]
                for e in cluster.api.list("events", NS)
                if e.get("reason") in ("WokeUp", "ScaledUp", "ScaledDown", "ScaledToZero")
            ],
        }
    finally:
        pods.stop.set()
        r.close()
        operator.stop()
        kubelet.cleanup()
        cluster.stop()
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--work-ms", type=int, default=20)
    parser.add_argument("--max-replicas", type=int, default=12)
    args = parser.parse_args()
    result = main(args.events, args.work_ms, args.max_replicas)
    events = result.pop("scale_events")
    for line in events:  # type: ignore[attr-defined]
        print(line, file=sys.stderr)
    print(json.dumps(result))
