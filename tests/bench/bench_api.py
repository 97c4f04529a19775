"""api: what the operator costs the Kubernetes API, on the real control plane.

500 ConsumerGroups (10 per stream, 50 busy streams: a producer adds an entry to every stream
every 0.25 s, so every group's backlog changes with every poll), the operator at its default
settings as a ServiceAccount with the README's RBAC, measured for 60 s after all groups are
Ready:

- ``writes_per_s``, ``reads_per_s``: the API server's own count (``apiserver_request_total``
  from its /metrics, the difference over the window) of the requests on what the operator
  touches (our three resources and their status, Events, Deployments' /scale, pods, Secrets,
  HPAs and ScaledObjects, Leases); the benchmark's own requests (its LISTs of ConsumerGroups,
  its watch) are taken out. ``client_writes_per_s`` is the operator's own count
  (``streamherd_api_requests_total``: the loops' requests, not kopf's), beside it: the
  difference is what kopf itself wrote (its annotations) and the controller manager's Events.
- ``max_status_age_s``: how old the numbers in a group's status were, at worst, over every
  group and every sample (a LIST every 2 s). Each group starts at "0" on its stream and nobody
  reads it, so its status ``lag`` L says which entry was the last one its numbers had seen:
  the age is now minus the time the producer added entry L+1 (entry ids carry their time). No
  timing of watch events, so a lagging client cannot inflate it.
- ``scale_s``: five more ConsumerGroups (minReplicas 1, 100 a replica) each scale a Deployment;
  twice in the window a burst lands on their streams, and this is the worst time from the
  burst to the Deployment's new replicas (a watch), against the 2 s default pollInterval.
- ``status_interval_s``: the effective interval of status numbers the operator states
  (``streamherd_status_interval_seconds``: --status-interval, or writers /
  --status-writes-per-second when longer); the goal is ``max_status_age_s`` within twice it.
- ``takeover_s``: the gap between killing the leader of two replicas and the other taking
  over: a separate run, ``bench_takeover``'s (its worst of three kills).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
from e2e.cluster.local import DEFAULT_CRDS
from e2e.cluster.objects import apply_crds
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port
from e2e.controlplane.controlplane import ControlPlane
from e2e.controlplane.rbac import operator_kubeconfig
from tests.budget.test_write_budget import worker

NS = "bench"
GROUPS, STREAMS, SCALED = 500, 50, 5
WINDOW = 60.0
WARM_UP = 10.0
PRODUCE_EVERY = 0.25
SAMPLE_EVERY = 2.0
BASE = "/apis/streamherd.io/v1alpha1/namespaces/" + NS

WRITES = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"}
READS = {"GET", "LIST"}
OPERATOR_RESOURCES = {
    ("streamherd.io", "redisstreams"),
    ("streamherd.io", "consumergroups"),
    ("streamherd.io", "retentionpolicies"),
    ("", "events"),
    ("events.k8s.io", "events"),
    ("apps", "deployments"),
    ("", "pods"),
    ("", "secrets"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("keda.sh", "scaledobjects"),
    ("coordination.k8s.io", "leases"),
    ("batch", "cronjobs"),
}
# Written by the controller manager, never by the operator: the Deployment's status, and the
# pods its ReplicaSets create.
NOT_OURS = {("apps", "deployments", "status"), ("", "pods", "", "POST")}
SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def api_counts(plane: ControlPlane) -> Counter[tuple[str, str, str, str]]:
    """(verb, group, resource, subresource) -> requests so far, from the API server."""
    reply = plane.request("GET", "/metrics")
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for line in str(reply.body).splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (labels["verb"], labels["group"], labels["resource"], labels["subresource"])
        counts[key] += int(float(match["value"]))
    return counts


def client_counts(port: int) -> Counter[tuple[str, str]]:
    import urllib.request

    # A busy operator on a loaded machine answers slowly (its metrics thread shares the GIL).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        text = r.read().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("streamherd_api_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            counts[(labels["verb"], labels["resource"])] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def gauge(port: int, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def ours(key: tuple[str, str, str, str]) -> bool:
    verb, group, resource, sub = key
    if (group, resource) not in OPERATOR_RESOURCES:
        return False
    return (group, resource, sub) not in NOT_OURS and (group, resource, sub, verb) not in NOT_OURS


def create(plane: ControlPlane, path: str, body: dict[str, Any]) -> None:
    reply = plane.request("POST", path, body)
    if reply.status != 201:
        raise RuntimeError(f"POST {path}: {reply.status} {reply.body}")


def custom(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


class Producer(threading.Thread):
    """An entry on every busy stream every PRODUCE_EVERY seconds; remembers each entry's id
    (its time), so a status lag says when its numbers were measured."""

    def __init__(self, url: str, streams: list[str]) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.streams = streams
        self.ids: dict[str, list[str]] = {s: [] for s in streams}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            pipe = self.r.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xadd(stream, {"n": 1})
            for stream, entry in zip(self.streams, pipe.execute(), strict=True):
                self.ids[stream].append(entry)
            self.halt.wait(PRODUCE_EVERY)

    def added_at(self, stream: str, index: int) -> float | None:
        """The wall time of the stream's entry ``index`` (0-based), if added yet."""
        ids = self.ids[stream]
        return int(ids[index].split("-")[0]) / 1000 if index < len(ids) else None


class ReplicaWatch(threading.Thread):
    """The Deployments' spec.replicas as they change, with when (a watch, not polling)."""

    def __init__(self, plane: ControlPlane) -> None:
        super().__init__(daemon=True)
        self.plane = plane
        self.changes: list[tuple[float, str, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        client = self.plane.client(timeout=30)
        path = f"/apis/apps/v1/namespaces/{NS}/deployments"
        while not self.halt.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                for event in client.watch(path, timeout=30, timeoutSeconds=25):
                    obj = event["object"]
                    self.changes.append(
                        (time.time(), obj["metadata"]["name"], int(obj["spec"]["replicas"]))
                    )
                    if self.halt.is_set():
                        return

    def first(self, name: str, replicas: int, after: float) -> float | None:
        return next(
            (t for t, n, r in self.changes if n == name and r >= replicas and t >= after), None
        )


def run(plane: ControlPlane, workdir: Path, server: RedisServer) -> dict[str, Any]:
    plane.create_namespace(NS)
    apply_crds(plane.kubeconfig(), DEFAULT_CRDS)
    kubeconfig = operator_kubeconfig(plane, NS, workdir / "operator.kubeconfig")
    busy = [f"s{i}" for i in range(STREAMS)]
    scaled = [f"scale{i}" for i in range(SCALED)]
    r = redis.Redis.from_url(server.url, decode_responses=True)
    for stream in busy + scaled:
        r.xadd(stream, {"n": 0})  # the streams exist before their groups: startId 0 counts all
    producer = Producer(server.url, busy)
    producer.ids = {s: [r.xrange(s)[0][0]] for s in busy}
    for stream in busy + scaled:
        create(
            plane,
            f"{BASE}/redisstreams",
            custom("RedisStream", stream, {"redis": {"url": server.url}, "key": stream}),
        )
    groups: dict[str, str] = {}
    for index in range(GROUPS - SCALED):  # round-robin over the busy streams
        stream, g = busy[index % STREAMS], index // STREAMS
        name = f"{stream}-g{g}"
        groups[name] = stream
        create(
            plane,
            f"{BASE}/consumergroups",
            custom(
                "ConsumerGroup",
                name,
                {"streamRef": {"name": stream}, "groupName": f"g{g}", "startId": "0"},
            ),
        )
    for name in scaled:
        create(plane, f"/apis/apps/v1/namespaces/{NS}/deployments", worker(name, NS))
        create(
            plane,
            f"{BASE}/consumergroups",
            custom(
                "ConsumerGroup",
                name,
                {
                    "streamRef": {"name": name},
                    "startId": "0",
                    "consumers": {"deploymentRef": {"name": name}},
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 8, "targetPerReplica": 100},
                },
            ),
        )
    producer.start()
    metrics_port = free_port()
    operator = OperatorProcess(
        [
            "streamherd",
            "run",
            "--namespace",
            NS,
            "--metrics-port",
            str(metrics_port),
            "--health-port",
            str(free_port()),
            "--log-level",
            "WARNING",
        ],
        kubeconfig=kubeconfig,
        log_path=workdir / "operator.log",
    ).start()
    watch = ReplicaWatch(plane)
    watch.start()
    bench_lists = 0

    def listed() -> list[dict[str, Any]]:
        nonlocal bench_lists
        bench_lists += 1
        reply = plane.request("GET", f"{BASE}/consumergroups?resourceVersion=0")
        return list((reply.body or {}).get("items") or [])

    def all_ready() -> bool:
        items = listed()
        ready = [
            i
            for i in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (i.get("status") or {}).get("conditions") or []
            )
            and (i.get("status") or {}).get("lag") is not None
        ]
        return len(ready) == GROUPS

    try:
        started = time.monotonic()
        wait_until(
            all_ready,
            600,
            interval=2,
            message=lambda: f"not all groups Ready:\n{operator.logs()[-3000:]}",
        )
        ready_s = time.monotonic() - started
        time.sleep(WARM_UP)
        before_api, before_client = api_counts(plane), client_counts(metrics_port)
        lists_before = bench_lists
        window_start = time.monotonic()
        ages: list[float] = []
        bursts: list[tuple[float, int]] = []
        burst_sizes = {WINDOW / 3: 250, 2 * WINDOW / 3: 600}  # 1 -> 3, then 3 -> 6 replicas
        while (elapsed := time.monotonic() - window_start) < WINDOW:
            for at, size in list(burst_sizes.items()):
                if elapsed >= at:
                    del burst_sizes[at]
                    pipe = r.pipeline(transaction=False)
                    for name in scaled:
                        for _ in range(size - sum(n for _, n in bursts)):
                            pipe.xadd(name, {"n": 1})
                    bursts.append((time.time(), size - sum(n for _, n in bursts)))
                    pipe.execute()
            now = time.time()
            for item in listed():
                name = item["metadata"]["name"]
                lag = (item.get("status") or {}).get("lag")
                if name not in groups or lag is None:
                    continue
                nxt = producer.added_at(groups[name], int(lag))
                ages.append(now - nxt if nxt is not None else 0.0)
            time.sleep(max(0.0, SAMPLE_EVERY - (time.time() - now)))
        seconds = time.monotonic() - window_start
        after_api, after_client = api_counts(plane), client_counts(metrics_port)
        interval = gauge(metrics_port, "streamherd_status_interval_seconds")
        scale_delays = []
        total = 1
        for at, size in bursts:
            total += size
            wanted = -(-total // 100)
            for name in scaled:
                seen = watch.first(name, min(wanted, 8), at)
                scale_delays.append(seen - at if seen is not None else float("inf"))
    finally:
        producer.halt.set()
        watch.halt.set()
        operator.stop()
    delta = after_api - before_api
    own_lists = bench_lists - lists_before
    delta[("LIST", "streamherd.io", "consumergroups", "")] -= own_lists
    writes = sum(n for k, n in delta.items() if k[0] in WRITES and ours(k))
    reads = sum(n for k, n in delta.items() if k[0] in READS and ours(k))
    client = after_client - before_client
    client_writes = sum(n for (verb, _), n in client.items() if verb in WRITES)
    breakdown = {
        f"{verb} {group or 'core'}/{resource}{'/' + sub if sub else ''}": n
        for (verb, group, resource, sub), n in sorted(delta.items(), key=lambda kv: -kv[1])
        if n and ours((verb, group, resource, sub))
    }
    print(f"requests by verb over {seconds:.0f}s (API server): {breakdown}", file=sys.stderr)
    print(f"the operator's own count: {dict(client)}", file=sys.stderr)
    print(f"all groups Ready {ready_s:.0f}s after the operator started", file=sys.stderr)
    print(f"burst -> replicas (s, per burst and Deployment): {scale_delays}", file=sys.stderr)
    return {
        "groups": len(groups) + SCALED,
        "writes_per_s": round(writes / seconds, 1),
        "reads_per_s": round(reads / seconds, 1),
        "max_status_age_s": round(max(ages), 1) if ages else None,
        "status_interval_s": round(interval, 1) if interval is not None else None,
        "takeover_s": None,
        "client_writes_per_s": round(client_writes / seconds, 1),
        # null when some Deployment never reached its replicas within the window (JSON has
        # no Infinity): scale_missed says how many (burst, Deployment) pairs.
        "scale_s": round(max(scale_delays), 2)
        if scale_delays and max(scale_delays) != float("inf")
        else None,
        "scale_missed": sum(1 for d in scale_delays if d == float("inf")),
        "ready_s": round(ready_s, 1),
    }


def main() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = RedisServer("7.0").start()
    plane = ControlPlane()
    try:
        plane.start()
        result = run(plane, workdir, server)
    finally:
        plane.cleanup()
        server.cleanup()
    # The separate two-replica run the issue asks for (its own control plane, a minute).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_takeover

    takeover = bench_takeover.main()
    print(f"takeover run: {json.dumps(takeover)}", file=sys.stderr)
    result["takeover_s"] = takeover["takeover_s"]
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
