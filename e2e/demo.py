"""`make demo`: streamherd on a local simulated cluster with a real Redis.

Live AI conversations: every call writes an event every ~250 ms to its own stream
(conv:<call-id>); three groups read every call: brain (latency-critical, scales to zero and
wakes on the first event), compliance (always on), crm (a Deployment streamherd owns from a
template). The story, about a minute long:

  quiet      no calls: brain and crm sit at zero replicas
  calls      a few calls start: brain wakes at once, crm wakes, backlogs stay small
  surge      many calls: every group scales out
  crash      a brain consumer is killed mid-batch: the janitor hands its work back
  hang-up    calls end: backlogs drain, replicas come back down, brain and crm to zero

kubectl output (the real kubectl, against the emulated API) shows what a user would see;
at the end, every event is checked: produced = processed for every group.
Options: --seconds N (the length of the story), --keep (stay up for your own kubectl).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from e2e import consumer
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import VENV_BIN, OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port
from streamherd.consumer import SyncStreamClient

REPO = Path(__file__).resolve().parents[1]
NS = "default"


def resources(redis_url: str) -> list[dict[str, Any]]:
    def deployment(name: str, group: str, work_ms: str) -> dict[str, Any]:
        return consumer.deployment(
            name,
            redis_url=redis_url,
            group=group,
            pattern="conv:*",
            env={"WORK_MS": work_ms, "MODE": "history"},
        )

    docs = list(
        yaml.safe_load_all((REPO / "manifests" / "examples" / "conversations.yaml").read_text())
    )
    for doc in docs:
        doc["metadata"]["namespace"] = NS
        spec = doc["spec"]
        if (
            doc["kind"] == "RedisStream"
        ):  # the example reads the URL from a Secret; here, a local Redis
            spec["redis"] = {"url": redis_url}
        if doc["kind"] == "ConsumerGroup":
            name = doc["metadata"]["name"]
            spec["recovery"] = {**spec.get("recovery", {}), "minIdle": "10s", "interval": "2s"}
            spec["autoscaling"].update(
                pollInterval="1s", idleBeforeZero="8s", scaleDown={"stabilizationWindow": "4s"}
            )
            if name == "crm":  # the template's container, made runnable here
                spec["consumers"]["template"]["spec"]["containers"][0].update(
                    command=["python", "-m", "e2e.consumer"],
                    env=[{"name": "WORK_MS", "value": "15"}, {"name": "MODE", "value": "history"}],
                )
                spec["autoscaling"]["targetPerReplica"] = 200
            if name == "brain":
                spec["autoscaling"].update(targetPerReplica=40, maxReplicas=6)
    return [
        deployment("conversation-brain", "brain", "25"),
        deployment("compliance-scanner", "compliance", "10"),
        *docs,
    ]


class Calls(threading.Thread):
    """Simulated calls: each active call writes an event every ~250 ms to conv:<id>, through
    the SDK's ``publish`` (a new call's stream is announced in the registry of new streams,
    and not trimmed before its groups exist)."""

    def __init__(self, client: SyncStreamClient) -> None:
        super().__init__(daemon=True)
        self.client, self.wanted, self.active, self.sent = client, 0, {}, 0
        self.stop = threading.Event()

    def run(self) -> None:
        next_id = 1
        while not self.stop.is_set():
            while len(self.active) < self.wanted:
                self.active[f"conv:{next_id:05d}"] = 0
                next_id += 1
            while len(self.active) > self.wanted:
                self.active.pop(next(iter(self.active)))
            for call, turn in list(self.active.items()):
                if random.random() < 0.9:  # a little jitter between calls
                    self.client.publish(
                        call,
                        {"msg": f"{call}/{turn}", "speaker": random.choice(["caller", "agent"])},
                    )
                    self.active[call] = turn + 1
                    self.sent += 1
            time.sleep(0.25)


def dead_lettered(client: redis.Redis, group: str) -> int:
    """Entries of ``group`` moved to dead-letter streams (handled: not lost)."""
    total = 0
    for key in client.scan_iter(match="*dlq", _type="stream"):
        total += sum(1 for _, fields in client.xrange(key) if group in fields.values())
    return total


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
    )
    return done.stdout + done.stderr


def show(kubeconfig: Path, title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)
    print(kubectl(kubeconfig, "get", "xgroup", "-n", NS).rstrip(), flush=True)
    print(kubectl(kubeconfig, "get", "deployments", "-n", NS).rstrip(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="streamherd on a local simulated cluster")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the story")
    parser.add_argument(
        "--keep", action="store_true", help="keep running at the end (Ctrl-C stops)"
    )
    args = parser.parse_args()
    beat = args.seconds / 6
    workdir = Path(tempfile.mkdtemp(prefix="streamherd-demo-"))
    server = RedisServer("7.0").start()
    cluster = LocalCluster().start()
    kubelet = cluster.start_kubelet(log_dir=workdir / "pods", stop_grace=1.0)
    kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig")
    metrics = free_port()
    operator = OperatorProcess(
        [
            "streamherd",
            "run",
            "--metrics-port",
            str(metrics),
            "--health-port",
            str(free_port()),
            "--log-level",
            "WARNING",
        ],
        kubeconfig=kubeconfig,
        log_path=workdir / "operator.log",
    )
    client = redis.Redis.from_url(server.url, decode_responses=True)
    publisher = SyncStreamClient(server.url, maxlen=10_000)
    calls = Calls(publisher)
    try:
        print(f"redis-server {server.version} at {server.url}; Kubernetes API at {cluster.url}")
        print(
            f"kubeconfig: {kubeconfig}   operator log: {workdir / 'operator.log'}   metrics: http://127.0.0.1:{metrics}/metrics"
        )
        for obj in resources(server.url):
            cluster.api.create(obj)
        operator.start()
        wait_until(
            lambda: all(
                (cluster.api.get("consumergroups.streamherd.io", NS, g) or {})
                .get("status", {})
                .get("desiredReplicas")
                is not None
                for g in ("brain", "compliance", "crm")
            ),
            60,
            message=lambda: operator.logs()[-3000:],
        )
        show(kubeconfig, "quiet: no calls yet (brain and crm at zero)")
        calls.start()
        calls.wanted = 3
        time.sleep(beat)
        show(kubeconfig, "calls: 3 live calls (an event every 250 ms each)")
        calls.wanted = 40
        time.sleep(beat * 1.5)
        show(kubeconfig, "surge: 40 live calls")
        brain = sorted(p for p in kubelet.processes(NS) if p.startswith("conversation-brain"))
        if brain:
            victim = brain[0]
            kubelet.kill(victim)
            cluster.api.delete("pods", NS, victim)
            print(
                f"\n>>> killed brain pod {victim} mid-batch (SIGKILL): its pending events must not be lost",
                flush=True,
            )
        time.sleep(beat)
        show(kubeconfig, "after the crash")
        calls.wanted = 0
        time.sleep(beat * 2.5)
        show(kubeconfig, "hang-up: calls ended, backlogs drained")
        calls.stop.set()
        calls.join()
        print("\n=== events " + "=" * 60)
        print(
            kubectl(
                kubeconfig,
                "get",
                "events",
                "-n",
                NS,
                "--sort-by=.metadata.creationTimestamp",
                "-o",
                "custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message",
            ).rstrip()[-6000:]
        )
        print("\n=== nothing lost? " + "=" * 52)
        ok = True
        for group in ("brain", "compliance", "crm-enricher"):

            def done(group: str = group) -> bool:
                return (
                    client.scard(f"processed:{group}") + dead_lettered(client, group) >= calls.sent
                )

            finished = True
            try:
                wait_until(done, 60, interval=0.5)
            except TimeoutError:
                finished = False
            processed, dead = client.scard(f"processed:{group}"), dead_lettered(client, group)
            ok &= finished
            print(
                f"{group:13s} produced {calls.sent:6d}  processed {processed:6d}  dead-lettered {dead:4d}  {'ok' if finished else 'MISSING'}"
            )
        if args.keep:
            print(
                f"\nstill running: KUBECONFIG={kubeconfig} kubectl get xgroup,xstream  (Ctrl-C to stop)"
            )
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0 if ok else 1
    finally:
        calls.stop.set()
        if calls.is_alive():
            calls.join(5)
        publisher.close()
        operator.stop()
        kubelet.cleanup()
        cluster.stop()
        server.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
