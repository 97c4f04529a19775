"""reaction: how fast autoscaling reacts, in the local cluster with real consumer processes.

(a) wake_from_zero_s: a group at zero replicas receives one message -> the Deployment's
    replicas are raised (WAKE_ROUNDS times, the first right after the operator started;
    median, max and the first reported);
(b) scale_up_s: a 2,000-message burst on an idle group at one replica -> replicas raised
    (SCALE_UP_ROUNDS times, each at a random moment of the poll interval, the group back at
    one replica and idle between rounds; median and max reported);
(c) drained_to_min_s: the backlog reaches zero -> replicas back at minReplicas, with the
    windows this benchmark configures (scale-down window 5s, idleBeforeZero 5s).
(a) and (b) use the default pollInterval (2s) and windows. For comparison, KEDA's documented
defaults: up to 30 s from zero (pollingInterval), ~15 s from one (HPA sync), >= 5 min down.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
from e2e import consumer
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port

NS = "default"
WAKE_ROUNDS = 20
SCALE_UP_ROUNDS = 8
BURST = 2_000


def deployment(
    name: str, url: str, replicas: int, group: str, work_ms: str = "0"
) -> dict[str, Any]:
    env = {"WORK_MS": work_ms, "BATCH": "100"}
    return consumer.deployment(
        name, redis_url=url, group=group, stream=name, replicas=replicas, grace_seconds=1, env=env
    )


def custom(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def replicas(api: Any, name: str) -> int:
    return int(api.get("deployments.apps", NS, name)["spec"]["replicas"])


def timed(predicate: Any, timeout: float = 120.0) -> float:
    started = time.perf_counter()
    wait_until(predicate, timeout, interval=0.002)
    return time.perf_counter() - started


def main() -> dict[str, Any]:
    cluster = LocalCluster().start()
    kubelet = cluster.start_kubelet(
        log_dir=Path(tempfile.mkdtemp(prefix="bench-pods-")), stop_grace=0.5
    )
    server = RedisServer("7.0").start()
    r = redis.Redis.from_url(server.url, decode_responses=True)
    api = cluster.api
    workdir = Path(tempfile.mkdtemp(prefix="bench-reaction-"))
    kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig")
    operator = None
    try:

        def scenario(
            name: str, replicas: int, autoscaling: dict[str, Any], work_ms: str = "0"
        ) -> None:
            """A stream, its consumer Deployment, and a ConsumerGroup that scales it."""
            api.create(deployment(name, server.url, replicas, name, work_ms=work_ms))
            api.create(custom("RedisStream", name, {"redis": {"url": server.url}, "key": name}))
            api.create(
                custom(
                    "ConsumerGroup",
                    name,
                    {
                        "streamRef": {"name": name},
                        "consumers": {"deploymentRef": {"name": name}},
                        "autoscaling": autoscaling,
                    },
                )
            )

        # (a) wake from zero: defaults, minReplicas 0
        scenario(
            "wake",
            0,
            {"minReplicas": 0, "idleBeforeZero": "1s", "scaleDown": {"stabilizationWindow": "0s"}},
        )
        # (b) burst at one replica: defaults, minReplicas 1; 5 ms a message, so one replica
        # cannot keep up with the burst (that is what makes it one)
        scenario(
            "burst",
            1,
            {
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetPerReplica": 100,
                "scaleDown": {"stabilizationWindow": "0s"},
            },
            work_ms="5",
        )
        # (c) drain to min: minReplicas 0, the windows this benchmark sets
        scenario(
            "drain",
            0,
            {
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetPerReplica": 500,
                "scaleDown": {"stabilizationWindow": "5s"},
                "idleBeforeZero": "5s",
            },
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
        for name in ("wake", "burst", "drain"):
            wait_until(
                lambda name=name: (
                    (api.get("consumergroups.streamherd.io", NS, name) or {})
                    .get("status", {})
                    .get("desiredReplicas")
                    is not None
                ),
                60,
            )
        wait_until(
            lambda: (
                replicas(api, "burst") == 1
                and len([p for p in kubelet.processes(NS) if p.startswith("burst")]) == 1
            ),
            60,
        )

        wakes = []
        for round_ in range(WAKE_ROUNDS):
            # At zero, and no pod of the last round still stopping: one would consume the
            # entry itself, and there would be nothing to wake up for.
            wait_until(
                lambda: (
                    replicas(api, "wake") == 0
                    and not [p for p in kubelet.processes(NS) if p.startswith("wake-")]
                ),
                60,
            )
            time.sleep(0.5)  # settled at zero
            r.xadd("wake", {"msg": f"w{round_}"})
            wakes.append(timed(lambda: replicas(api, "wake") >= 1))
            wait_until(lambda round_=round_: r.sismember("processed:wake", f"w{round_}"), 60)

        def idle_at_one() -> bool:
            group = {g["name"]: g for g in r.xinfo_groups("burst")}.get("burst")
            pods = [p for p in kubelet.processes(NS) if p.startswith("burst")]
            return (
                bool(group)
                and group["pending"] == 0
                and group["lag"] == 0
                and replicas(api, "burst") == 1
                and len(pods) == 1
            )

        scale_ups = []
        rng = random.Random(15)
        for round_ in range(SCALE_UP_ROUNDS):
            wait_until(idle_at_one, 120, interval=0.05)
            time.sleep(rng.uniform(0.5, 2.5))  # anywhere in the 2 s poll interval
            pipe = r.pipeline(transaction=False)
            for i in range(BURST):
                pipe.xadd("burst", {"msg": f"b{round_}-{i}"})
            pipe.execute()
            scale_ups.append(timed(lambda: replicas(api, "burst") > 1))

        pipe = r.pipeline(transaction=False)
        for i in range(2_000):
            pipe.xadd("drain", {"msg": f"d{i}"})
        pipe.execute()
        wait_until(lambda: replicas(api, "drain") >= 1, 60)

        def drained() -> bool:
            group = {g["name"]: g for g in r.xinfo_groups("drain")}.get("drain")
            return bool(group) and group["pending"] == 0 and group["lag"] == 0

        wait_until(drained, 120, interval=0.005)
        drained_to_min = timed(lambda: replicas(api, "drain") == 0)
        total = BURST * SCALE_UP_ROUNDS
        lost = (
            total - r.scard("processed:burst")
            if wait_until(lambda: r.scard("processed:burst") == total, 120)
            else None
        )
    finally:
        if operator is not None:
            operator.stop()
        kubelet.cleanup()
        cluster.stop()
        server.cleanup()
    return {
        "wake_from_zero_s": round(statistics.median(wakes), 3),
        "wake_from_zero_max_s": round(max(wakes), 3),
        "wake_from_zero_first_s": round(wakes[0], 3),
        "wake_rounds": len(wakes),
        "scale_up_s": round(statistics.median(scale_ups), 3),
        "scale_up_max_s": round(max(scale_ups), 3),
        "scale_up_rounds": len(scale_ups),
        "drained_to_min_s": round(drained_to_min, 3),
        "poll_interval_s": 2.0,
        "drain_windows_s": {"scale_down": 5, "idle_before_zero": 5},
        "burst_lost": lost,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
