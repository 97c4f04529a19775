"""load: the operator's footprint with 2,000 ConsumerGroups and a pattern over 5,000 streams.

A new user's set-up, on the emulator (e2e/cluster) and two real redis-servers (7.0): each
endpoint holds 1,000 streams, each with its RedisStream and one ConsumerGroup (2,000 groups),
and endpoint A also 5,000 call streams ``call:NNNNN`` under one RedisStream with
``keyPattern: call:*`` and one ConsumerGroup. A producer (its own process: it shares no GIL
with the emulator) adds an entry to every stream of both endpoints every second and to 50
random call streams, so every group's backlog changes with every poll. The operator
(`streamherd run` at its default settings; the only flags are the metrics and health ports)
is started once the resources exist (as after an upgrade or a restart: creating thousands
while it runs measures the emulator more than the operator); once every group's status has
numbers (``ready_s`` after its start), the window (300 s; ``--window``) is measured:

- ``rss_mib``: the operator's largest resident set (/proc/<pid>/status, every second);
- ``cpu_percent``: its CPU (utime+stime, /proc/<pid>/stat) over the window, in percent of
  one core;
- ``redis_cpu_percent``: both servers' used_cpu_sys+used_cpu_user (INFO cpu) over the
  window, less the producer's share, in percent of one core. The producer's share is
  measured, not guessed: before the operator starts, the producer runs alone for a while
  and the servers' CPU per XADD is taken from that (``redis_cpu_raw_percent`` is the
  total, ``producer_cpu_percent`` what was taken out);
- ``max_poll_delay_ratio``: how old a group's measurement had got when its next one reached
  its loop, in pollIntervals (the operator's streamherd_group_poll_delay_ratio histogram,
  the window's samples): the upper bound of the highest bucket any sample fell in, so 1.1
  means every sample was within 1.1 intervals (null: beyond the last bucket);
  ``polls_per_group_interval`` is the number of samples over groups x window/interval
  (about 1 when every loop consumed every poll of its own);
- ``api_writes_per_s``: the emulator's count of the write requests it served (every
  client: the operator's loops and kopf's own patches), over the window.

``--short`` is a small run for iterating (200 groups, 500 call streams, a 30 s window);
``--profile PATH`` records the operator with py-spy (collapsed stacks) during the window.
The machine's load (/proc/loadavg) is printed beside the numbers: the CPU figures are the
processes' own CPU time, but a loaded machine makes every loop later.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port

NS = "default"
PRODUCE_EVERY = 1.0
CALLS_PER_SECOND = 50
CALIBRATE_S = 15.0
WARM_UP_S = 10.0
INTERVAL = 2.0  # the default pollInterval
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUCKET = re.compile(r'^streamherd_group_poll_delay_ratio_bucket\{le="([^"]+)"\} (\S+)$')


def custom(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


# ------------------------------------------------------------------ the producer (a process)


def produce(config: dict[str, Any]) -> None:
    """Every PRODUCE_EVERY seconds an entry on every stream of each endpoint and on a few
    random call streams, pipelined; runs until killed."""
    clients = [redis.Redis.from_url(url) for url in config["urls"]]
    calls = config["calls"]
    while True:
        started = time.monotonic()
        for client in clients:
            pipe = client.pipeline(transaction=False)
            for i in range(config["streams"]):
                pipe.xadd(f"s:{i}", {"n": 1})
            if client is clients[0] and calls:
                for i in random.sample(range(calls), min(calls, CALLS_PER_SECOND)):
                    pipe.xadd(f"call:{i:05d}", {"n": 1})
            pipe.execute()
        time.sleep(max(0.0, PRODUCE_EVERY - (time.monotonic() - started)))


class Producer:
    def __init__(self, urls: list[str], streams: int, calls: int) -> None:
        self.config = {"urls": urls, "streams": streams, "calls": calls}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--produce", json.dumps(self.config)]
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


# ------------------------------------------------------------------ measuring


Commands = dict[str, tuple[int, int]]
"""Per command (INFO commandstats), its calls and microseconds so far."""


def redis_cpu(server: RedisServer) -> tuple[float, Commands]:
    """(CPU seconds the server used so far, its commands so far)."""
    r = redis.Redis.from_url(server.url)
    try:
        cpu = r.info("cpu")
        stats = r.info("commandstats")
    finally:
        r.close()
    commands = {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), commands


def xadds(sample: tuple[float, Commands]) -> int:
    return sample[1].get("xadd", (0, 0))[0]


def command_costs(
    before: list[tuple[float, Commands]],
    after: list[tuple[float, Commands]],
    seconds: float,
) -> dict[str, str]:
    """The window's commands by the time Redis spent in them (both servers; a script's own
    calls are counted inside EVALSHA too): calls/s and percent of one core."""
    totals: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for b, a in zip(before, after, strict=True):
        for name, (n, usec) in a[1].items():
            was = b[1].get(name, (0, 0))
            calls[name] += n - was[0]
            totals[name] += usec - was[1]
    return {
        name: f"{calls[name] / seconds:.0f}/s {100 * usec / 1e6 / seconds:.2f}%"
        for name, usec in totals.most_common(12)
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def scrape(port: int) -> str:
    # A busy operator answers slowly (its metrics thread shares the GIL).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as reply:
        return str(reply.read().decode())


def delay_buckets(text: str) -> dict[float, float]:
    """le -> cumulative count of streamherd_group_poll_delay_ratio."""
    buckets = {}
    for line in text.splitlines():
        match = BUCKET.match(line)
        if match:
            buckets[float(match[1])] = float(match[2])
    return buckets


def client_writes(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("streamherd_api_requests_total{"):
            verb = re.search(r'verb="([^"]*)"', line)
            if verb and verb[1] in WRITES:
                total += float(line.rsplit(" ", 1)[1])
    return total


def with_numbers(cluster: LocalCluster) -> int:
    """ConsumerGroups whose status has numbers (a lag) and Ready=True; -1 when the emulator,
    busy serving the operator, did not answer in time."""
    try:
        items = cluster.api.list("consumergroups.streamherd.io", NS)
    except TimeoutError:
        return -1
    count = 0
    for item in items:
        status = item.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        count += bool(ready and status.get("lag") is not None)
    return count


# ------------------------------------------------------------------ the run


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    per_endpoint = args.groups // 2
    servers = [RedisServer("7.0").start(), RedisServer("7.0").start()]
    cluster = LocalCluster(record_requests=False, keep_history=False).start()
    producer = Producer([s.url for s in servers], per_endpoint, args.pattern_streams)
    profiler: subprocess.Popen[bytes] | None = None
    operator: OperatorProcess | None = None
    try:
        for server in servers:  # every stream exists, with an entry, before anything else
            pipe = redis.Redis.from_url(server.url).pipeline(transaction=False)
            for i in range(per_endpoint):
                pipe.xadd(f"s:{i}", {"n": 0})
            if server is servers[0]:
                for i in range(args.pattern_streams):
                    pipe.xadd(f"call:{i:05d}", {"n": 0})
            pipe.execute()
        # The producer alone: the servers' CPU per XADD, to take its share out later.
        before = [redis_cpu(s) for s in servers]
        producer.start()
        time.sleep(args.calibrate)
        after = [redis_cpu(s) for s in servers]
        cpu_per_xadd = [
            (a[0] - b[0]) / max(1, xadds(a) - xadds(b)) for a, b in zip(after, before, strict=True)
        ]
        print(
            f"producer alone: {[round(c * 1e6, 2) for c in cpu_per_xadd]} us/XADD", file=sys.stderr
        )

        started = time.monotonic()
        names = []
        for e, server in enumerate(servers):
            for i in range(per_endpoint):
                name = f"{'ab'[e]}-{i}"
                names.append(name)
                cluster.api.create(
                    custom("RedisStream", name, {"redis": {"url": server.url}, "key": f"s:{i}"})
                )
                cluster.api.create(custom("ConsumerGroup", name, {"streamRef": {"name": name}}))
        cluster.api.create(
            custom(
                "RedisStream", "calls", {"redis": {"url": servers[0].url}, "keyPattern": "call:*"}
            )
        )
        cluster.api.create(custom("ConsumerGroup", "calls", {"streamRef": {"name": "calls"}}))
        created_s = time.monotonic() - started
        groups = len(names) + 1
        print(f"{groups} groups created in {created_s:.0f}s (load {load()})", file=sys.stderr)
        metrics_port = free_port()
        started = time.monotonic()
        operator = OperatorProcess(
            [
                "streamherd",
                "run",
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                str(free_port()),
            ],
            kubeconfig=cluster.write_kubeconfig(workdir / "kubeconfig"),
            log_path=workdir / "operator.log",
        ).start()
        operator.wait_for_log("metrics on", 60)
        progress = {"at": 0.0}

        def all_numbers() -> bool:
            n = with_numbers(cluster)
            if time.monotonic() - progress["at"] > 30:
                progress["at"] = time.monotonic()
                print(
                    f"  {n}/{groups} with numbers after {time.monotonic() - started:.0f}s "
                    f"(load {load()}, operator {rss_mib(operator.pid):.0f} MiB)",
                    file=sys.stderr,
                )
            if not operator.running:
                raise RuntimeError(f"the operator exited:\n{operator.logs()[-3000:]}")
            return n == groups

        wait_until(
            all_numbers, args.ready_within, interval=10, message=lambda: operator.logs()[-3000:]
        )
        ready_s = time.monotonic() - started
        print(f"all groups with numbers {ready_s:.0f}s after the operator started", file=sys.stderr)
        time.sleep(WARM_UP_S)

        if args.profile:
            spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
            profiler = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-r",
                    "50",
                    "-d",
                    str(int(args.window)),
                    "-o",
                    args.profile,
                    "-p",
                    str(operator.pid),
                ],
                stdout=subprocess.DEVNULL,
            )
        load_before = load()
        text_before = scrape(metrics_port)
        requests_before = Counter(cluster.api.request_counts)
        redis_before = [redis_cpu(s) for s in servers]
        cpu_before = cpu_seconds(operator.pid)
        window_start = time.monotonic()
        peak = rss_mib(operator.pid)
        while time.monotonic() - window_start < args.window:
            time.sleep(1)
            peak = max(peak, rss_mib(operator.pid))
            if not operator.running:
                raise RuntimeError(f"the operator exited:\n{operator.logs()[-3000:]}")
        cpu_after = cpu_seconds(operator.pid)
        redis_after = [redis_cpu(s) for s in servers]
        requests_after = Counter(cluster.api.request_counts)
        seconds = time.monotonic() - window_start
        text_after = scrape(metrics_port)
        load_after = load()
        numbers_at_end = with_numbers(cluster)
        if profiler is not None:
            profiler.wait(60)
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.terminate()
        producer.stop()
        if operator is not None:
            operator.stop()
        cluster.stop()
        for server in servers:
            server.cleanup()

    requests = requests_after - requests_before
    writes = sum(n for (method, _, _), n in requests.items() if method in WRITES)
    by_kind = {
        f"{m} {p}{'/' + s if s else ''}": n
        for (m, p, s), n in sorted(requests.items(), key=lambda kv: -kv[1])
    }
    raw = sum(a[0] - b[0] for a, b in zip(redis_after, redis_before, strict=True))
    producer_cpu = sum(
        (xadds(a) - xadds(b)) * per
        for a, b, per in zip(redis_after, redis_before, cpu_per_xadd, strict=True)
    )
    first, last = delay_buckets(text_before), delay_buckets(text_after)
    window_counts = {le: last[le] - first.get(le, 0.0) for le in last}
    samples = window_counts.get(float("inf"), 0.0)
    # The highest bucket any sample fell in: the first bound that holds them all.
    bound = min((le for le in window_counts if window_counts[le] >= samples), default=None)
    over_2 = samples - window_counts.get(2.0, 0.0)
    print(f"requests over {seconds:.0f}s: {by_kind}", file=sys.stderr)
    print(f"Redis commands: {command_costs(redis_before, redis_after, seconds)}", file=sys.stderr)
    print(f"poll delay ratio samples by bucket (cumulative): {window_counts}", file=sys.stderr)
    print(f"load before/after the window: {load_before} / {load_after}", file=sys.stderr)
    return {
        "groups": len(names),
        "pattern_streams": args.pattern_streams,
        "rss_mib": round(peak, 1),
        "cpu_percent": round(100 * (cpu_after - cpu_before) / seconds, 1),
        "redis_cpu_percent": round(100 * (raw - producer_cpu) / seconds, 2),
        "max_poll_delay_ratio": bound if bound is not None and bound != float("inf") else None,
        "api_writes_per_s": round(writes / seconds, 1),
        "redis_cpu_raw_percent": round(100 * raw / seconds, 2),
        "producer_cpu_percent": round(100 * producer_cpu / seconds, 2),
        "polls_over_2_intervals": int(over_2),
        "polls_per_group_interval": round(samples / (groups * seconds / INTERVAL), 2),
        "client_writes_per_s": round(
            (client_writes(text_after) - client_writes(text_before)) / seconds, 1
        ),
        "groups_with_numbers_at_end": numbers_at_end,
        "created_s": round(created_s, 1),
        "ready_s": round(ready_s, 1),
        "window_s": round(seconds),
        "load": [load_before, load_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--window", type=float, default=float(os.environ.get("STREAMHERD_BENCH_WINDOW", 300))
    )
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument("--pattern-streams", type=int, default=5000)
    parser.add_argument("--short", action="store_true", help="200 groups, 500 calls, 30 s")
    parser.add_argument("--calibrate", type=float, default=CALIBRATE_S)
    parser.add_argument("--ready-within", type=float, default=1200)
    parser.add_argument("--profile", help="record the operator with py-spy to this file")
    parser.add_argument("--produce", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        with contextlib.suppress(KeyboardInterrupt):
            produce(json.loads(args.produce))
        return
    if args.short:
        args.groups, args.pattern_streams, args.window = 200, 500, 30.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    print(f"logs in {workdir}", file=sys.stderr)
    print(json.dumps(run(args, workdir)))


if __name__ == "__main__":
    main()
