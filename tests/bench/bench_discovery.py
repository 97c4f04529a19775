"""discovery: how soon a new call stream has its group, with a million unrelated keys.

The operator (`streamherd run`, the local cluster) keeps a ConsumerGroup on `conv:*` of a
Redis holding 1,000,000 other keys (DEBUG POPULATE); a new `conv:<id>` is written every
10 ms for 10 s. Latency = the group's XGROUP CREATE (seen on the keyevent channel, so the
measurement costs nothing) minus the stream's first XADD. One operator run per path:

(a) registry: the publisher registers each new key as the SDK's publish does (an entry in
    the registry of new streams); keyspace notifications off for the operator;
(b) notifications: notify-keyspace-events with Kn, nobody registers anything;
(c) scan_only: neither: SCAN (10,000 keys per poll, a poll every 2 s) is all there is; a
    full pass over a million keys takes minutes, so keys are waited for WAIT_S at most.
The runs are sequential on one machine (each needs its own operator); the summary's numbers
are (a)'s, the SDK's path; (b) and (c) stand beside it.
"""

from __future__ import annotations

import json
import statistics
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

from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY

NS = "default"
OTHER_KEYS = 1_000_000
EVERY_S, FOR_S = 0.010, 10.0
WAIT_S = 30.0
"""After the last new stream, how long the scan-only run waits for the rest."""


def custom(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_path(path: str, server: RedisServer, workdir: Path) -> dict[str, Any]:
    r = redis.Redis.from_url(server.url, decode_responses=True)
    for key in r.scan_iter(match="conv:*", count=10_000):
        r.delete(key)
    r.delete(REGISTRY_KEY)
    # Et: the keyevent channel of stream commands, for the measurement; the operator reads
    # it as "no notifications" (new-key discovery needs n) unless Kn is there too.
    r.config_set("notify-keyspace-events", "EtKn" if path == "notifications" else "Et")
    cluster = LocalCluster().start()
    discovery = {"registry": "registry", "notifications": "notifications", "scan_only": "none"}
    operator = OperatorProcess(
        [
            "streamherd",
            "run",
            "--metrics-port",
            "0",
            "--health-port",
            str(free_port()),
            "--log-level",
            "WARNING",
            "--discovery",
            discovery[path],
        ],
        kubeconfig=cluster.write_kubeconfig(workdir / f"kubeconfig-{path}"),
        log_path=workdir / f"operator-{path}.log",
    )
    created: dict[str, float] = {}
    written: dict[str, float] = {}
    listener = r.pubsub()
    listener.subscribe("__keyevent@0__:xgroup-create")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = listener.get_message(timeout=0.1)
            if message and message["type"] == "message":
                created.setdefault(str(message["data"]), time.monotonic())

    thread = threading.Thread(target=listen, daemon=True)
    try:
        cluster.api.create(
            custom("RedisStream", "calls", {"redis": {"url": server.url}, "keyPattern": "conv:*"})
        )
        cluster.api.create(custom("ConsumerGroup", "brain", {"streamRef": {"name": "calls"}}))
        operator.start()
        wait_until(
            lambda: (
                (cluster.api.get("consumergroups.streamherd.io", NS, "brain") or {})
                .get("status", {})
                .get("conditions")
            ),
            60,
            message=lambda: operator.logs()[-3000:],
        )
        thread.start()
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < FOR_S:
            key = f"conv:{path}-{n:05d}"
            written[key] = time.monotonic()
            r.xadd(key, {"turn": 0})
            if path == "registry":
                r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: key}, maxlen=100_000, approximate=True)
            n += 1
            time.sleep(max(0.0, started + n * EVERY_S - time.monotonic()))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and len(created.keys() & written.keys()) < len(written):
            time.sleep(0.1)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        listener.close()
        operator.stop()
        cluster.stop()
    latencies = [created[k] - written[k] for k in written if k in created]
    found = len(latencies)
    out: dict[str, Any] = {"new_streams": len(written), "found": found}
    if found:
        out.update(
            p50_s=round(statistics.median(latencies), 3),
            p99_s=round(percentile(latencies, 0.99), 3) if found == len(written) else None,
            max_s=round(max(latencies), 3) if found == len(written) else None,
        )
    if found < len(written):
        out["not_found_after_s"] = WAIT_S  # unknown is not zero: p99/max are beyond this
    return out


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-discovery-"))
    server = RedisServer("7.0", extra=(("enable-debug-command", "yes"),)).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.execute_command("DEBUG", "POPULATE", OTHER_KEYS, "session")
        assert client.dbsize() >= OTHER_KEYS
        results = {}
        for path in ("registry", "notifications", "scan_only"):
            results[path] = run_path(path, server, workdir)
            print(json.dumps({"path": path, **results[path]}), flush=True)
    finally:
        server.cleanup()
    main_path = results["registry"]
    print(
        json.dumps(
            {
                "other_keys": OTHER_KEYS,
                "new_streams": main_path["new_streams"],
                "p50_s": main_path.get("p50_s"),
                "p99_s": main_path.get("p99_s"),
                "max_s": main_path.get("max_s"),
                "paths": results,
            }
        )
    )


if __name__ == "__main__":
    main()
