"""`make demo`: streamherd on a local simulated cluster with a real Redis, live.

Live AI conversations: every call writes an event every ~250 ms to its own stream
(conv:<call-id>); three groups read every call: brain (latency-critical, scales to zero and
wakes on the first event), compliance (always on), crm (a Deployment streamherd owns from a
template). The flagship example (manifests/examples/conversations.yaml), its durations
shortened so the story fits in about a minute and a half:

  quiet      no calls: brain and crm sit at zero replicas
  calls      a few calls start: brain wakes from zero at once
  surge      many calls: every group scales out; a few events are poison
  crash      a brain pod is SIGKILLed mid-batch: the janitor hands its work back
  poison     the poison events fail in every group: the janitor dead-letters them
  fix        a fixed consumer is rolled out; `streamherd dlq replay --all` puts them back
  hang-up    calls end: backlogs drain, replicas come back down, brain and crm to zero
  retention  the ended calls' streams are deleted by the RetentionPolicy; memory returns

A live view (rich) shows every group's backlog, pending, lag (entries and seconds), replicas
vs desired, recovered, dead-lettered and health, and the Events as they happen. At the end:
the summary (produced = processed for every group, checked by id) and a PNG plot of backlog
and replicas per group over time. Options: --seconds N (the story's length), --plain (a log,
for CI), --keep (stay up for your own kubectl), --summary-json PATH, --plot PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from e2e import flagship
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import VENV_BIN, OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer, free_port
from e2e.liveview import LiveView

NS = "default"
NAMES = tuple(flagship.GROUPS)
RETENTION = {"maxAge": "30s", "deleteIdleStreamsAfter": "3s", "interval": "1s"}
"""The example's 2h / 6h / 1m, shortened: ended calls are deleted within seconds."""
MEMORY_TOLERANCE = 64 * 1024
"""What may stay of the calls in Redis: the registry's entry per call, the emptied dead-letter
streams (a key each), allocator rounding."""
FIXED = "fixed-no-field-is-poison"
"""The fix: the consumers' POISON_FIELD names a field no event carries."""


def resources(redis_url: str, *, poison_field: str = flagship.POISON_FIELD) -> list[dict[str, Any]]:
    """The example, runnable here and quick to react: 1 s polls, short windows, recovery
    within seconds, the retention durations shortened, every processing logged by id."""
    quick = {
        "pollInterval": "1s",
        "idleBeforeZero": "8s",
        "scaleDown": {"stabilizationWindow": "4s"},
    }
    return flagship.example(
        redis_url,
        env={"PROCESSED_LOG": "1", "POISON_FIELD": poison_field},
        work_ms={"brain": 25, "compliance": 10, "crm": 15},
        autoscaling={
            "brain": {**quick, "targetPerReplica": 40, "maxReplicas": 6},
            "compliance": {**quick, "targetPerReplica": 60, "maxReplicas": 4},
            "crm": {**quick, "targetPerReplica": 100, "maxReplicas": 3},
        },
        recovery={"minIdle": "10s", "interval": "2s", "maxDeliveries": 3},
        health={"window": "10s"},
        retention=RETENTION,
    )


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
    )
    return done.stdout + done.stderr


class Story:
    """The demo's moving parts, and the steps of its story."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.beat = args.seconds / 6
        self.workdir = Path(tempfile.mkdtemp(prefix="streamherd-demo-"))
        self.server = RedisServer(args.redis).start()
        self.cluster = LocalCluster().start()
        self.kubelet = self.cluster.start_kubelet(log_dir=self.workdir / "pods", stop_grace=1.0)
        self.kubeconfig = self.cluster.write_kubeconfig(self.workdir / "kubeconfig")
        self.metrics_port = free_port()
        self.operator = OperatorProcess(
            [
                "streamherd",
                "run",
                "--metrics-port",
                str(self.metrics_port),
                "--health-port",
                str(free_port()),
                "--log-level",
                "WARNING",
            ],
            kubeconfig=self.kubeconfig,
            log_path=self.workdir / "operator.log",
        )
        self.r = redis.Redis.from_url(self.server.url, decode_responses=True)
        self.calls = flagship.Calls(self.server.url)
        self.console = Console(
            force_terminal=None if not args.plain else False, width=None if not args.plain else 140
        )
        self.view = LiveView(
            names=NAMES,
            metrics_url=f"http://127.0.0.1:{self.metrics_port}/metrics",
            events=lambda: self.cluster.api.list("events", NS),
            memory=self.memory,
            calls=lambda: (self.calls.live, self.calls.sent),
            plain=args.plain,
            console=self.console,
        )
        self.summary: dict[str, Any] = {"workdir": str(self.workdir)}

    def memory(self) -> int | None:
        try:
            return flagship.used_memory(self.r)
        except redis.RedisError:
            return None

    def status(self, name: str) -> dict[str, Any]:
        obj = self.cluster.api.get("consumergroups.streamherd.io", NS, name) or {}
        return obj.get("status") or {}

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> bool:
        """Wait for the story to move on; say so (and go on) if it did not in time."""
        try:
            wait_until(predicate, timeout, interval=0.25)
            return True
        except TimeoutError:
            self.view.note(f"still waiting after {timeout:.0f}s: {what}")
            return False

    # ------------------------------------------------------------ the story

    def run(self) -> int:
        self.console.print(
            f"redis-server {self.server.version} at {self.server.url}; Kubernetes API at "
            f"{self.cluster.url}\nkubeconfig: {self.kubeconfig}   operator log: "
            f"{self.workdir / 'operator.log'}   metrics: http://127.0.0.1:{self.metrics_port}/metrics",
            highlight=False,
        )
        self.r.config_set("latency-tracking", "no")  # per-command histograms are not data
        for obj in resources(self.server.url):
            self.cluster.api.create(obj)
        self.operator.start()
        self.view.start()
        self.view.phase("start", "the operator creates the groups on conv:* and waits")
        wait_until(
            lambda: all(self.status(n).get("desiredReplicas") is not None for n in NAMES),
            60,
            message=lambda: self.operator.logs()[-3000:],
        )
        baseline = self.memory()
        self.calls.start()
        self.view.phase("quiet", "no calls: brain and crm at zero replicas")
        time.sleep(self.beat * 0.5)

        self.view.phase("calls", "3 calls start (an event every 250 ms each): brain wakes")
        self.calls.wanted = 3
        self.wait("brain awake", lambda: (self.status("brain").get("replicas") or 0) > 0, 30)
        time.sleep(self.beat * 0.6)

        surge = self.args.surge
        self.view.phase("surge", f"{surge} live calls: every group scales out; 6 events are poison")
        self.calls.wanted = surge
        self.calls.poison_next = 6
        time.sleep(self.beat * 0.8)

        self.view.phase("crash", "a brain pod is SIGKILLed mid-batch")
        self.kill_busiest("brain")
        time.sleep(self.beat * 0.5)

        self.view.phase("poison", "the poison events fail in every group: dead-lettered")
        poison = self.calls.poison_ids()
        self.wait(
            "every poison event dead-lettered by every group",
            lambda: all(
                set(flagship.dead_letters(self.r, g)) >= poison for g in flagship.GROUPS.values()
            ),
            90,
        )
        self.summary["deadLettered"] = {
            name: len(flagship.dead_letters(self.r, g)) for name, g in flagship.GROUPS.items()
        }

        self.view.phase("fix", "a fixed consumer is rolled out, then `streamherd dlq replay`")
        self.roll_out_fix()
        self.replay()
        self.wait(
            "the replayed events processed by every group",
            lambda: all(
                flagship.processed_ids(self.r, g) >= poison for g in flagship.GROUPS.values()
            ),
            60,
        )
        time.sleep(self.beat * 0.3)

        self.view.phase("hang-up", "every call ends: backlogs drain, replicas come down")
        produced = self.calls.hang_up()
        self.wait(
            "every event processed",
            lambda: all(
                not flagship.missing(self.r, g, produced) for g in flagship.GROUPS.values()
            ),
            90,
        )
        self.summarize(produced)

        self.view.phase("retention", "the ended calls' streams are deleted; memory returns")
        self.wait("every call stream deleted", lambda: not flagship.call_streams(self.r), 60)
        for key in self.r.scan_iter(match="processed*"):  # the demo's own bookkeeping
            self.r.delete(key)
        returned = self.wait(
            "Redis memory back where it started",
            lambda: (self.memory() or 0) - (baseline or 0) <= MEMORY_TOLERANCE,
            30,
        )
        self.wait(
            "brain and crm back to zero",
            lambda: all((self.status(n).get("replicas") or 0) == 0 for n in ("brain", "crm")),
            self.beat * 2 + 20,
        )
        time.sleep(1.0)  # one more sample of the end state
        self.view.stop()
        peak = max((s.memory or 0) for s in self.view.samples)
        policy = self.cluster.api.get("retentionpolicies.streamherd.io", NS, "live-calls") or {}
        self.summary.update(
            streams=len(self.calls.produced),
            streamsLeft=len(flagship.call_streams(self.r)),
            deletedStreams=(policy.get("status") or {}).get("deletedStreams"),
            trimmedEntries=(policy.get("status") or {}).get("trimmedEntries"),
            memory={"start": baseline, "peak": peak, "end": self.memory(), "returned": returned},
        )
        return self.report()

    def kill_busiest(self, name: str) -> None:
        group = flagship.GROUPS[name]
        running = self.kubelet.processes(NS)
        held = flagship.held_by(self.r, group, running)
        pods = [p for p in running if p.startswith(flagship.deployment_of(name))]
        victim = held.most_common(1)[0][0] if held else (pods[0] if pods else None)
        if victim is None:
            self.view.note(f"no {name} pod to kill")
            return
        self.kubelet.kill(victim)
        self.cluster.api.delete("pods", NS, victim, gracePeriodSeconds=0)
        self.summary["killed"] = victim
        self.view.note(f"SIGKILL {victim} holding {held.get(victim, 0)} unfinished events")

    def roll_out_fix(self) -> None:
        """The consumers' new version: a template change of each Deployment (crm's through
        its ConsumerGroup's template); the ReplicaSets roll the pods."""
        old = {p for p in self.kubelet.processes(NS)}
        for deployment in flagship.DEPLOYMENTS.values():
            body = self.cluster.api.get("deployments.apps", NS, deployment)
            (container,) = body["spec"]["template"]["spec"]["containers"]
            env = [e for e in container["env"] if e["name"] != "POISON_FIELD"]
            container["env"] = [*env, {"name": "POISON_FIELD", "value": FIXED}]
            self.cluster.api.patch(
                "deployments.apps", NS, deployment, {"spec": {"template": body["spec"]["template"]}}
            )
        crm = self.cluster.api.get("consumergroups.streamherd.io", NS, "crm")
        template = crm["spec"]["consumers"]["template"]
        (container,) = template["spec"]["containers"]
        env = [e for e in container["env"] if e["name"] != "POISON_FIELD"]
        container["env"] = [*env, {"name": "POISON_FIELD", "value": FIXED}]
        self.cluster.api.patch(
            "consumergroups.streamherd.io",
            NS,
            "crm",
            {"spec": {"consumers": {"template": template}}},
        )
        self.view.note("rolled out the fix: POISON_FIELD no longer fails any event")
        self.wait(
            "the fixed pods running, the old ones gone",
            lambda: not (set(self.kubelet.processes(NS)) & old),
            30,
        )

    def replay(self) -> None:
        command = ["streamherd", "dlq", "replay", "-n", NS, "-s", "conversations", "--all"]
        done = subprocess.run(
            [f"{VENV_BIN}/{command[0]}", *command[1:], "-o", "json"],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        try:
            lines = json.loads(done.stdout)
        except json.JSONDecodeError:
            self.view.note(f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}")
            self.summary["replayed"] = {}
            return
        outcomes = Counter((line["outcome"] or {}).get("outcome", "none") for line in lines)
        by_group = Counter(line["group"] for line in lines if line["outcome"])
        self.summary["replayed"] = {name: by_group.get(g, 0) for name, g in flagship.GROUPS.items()}
        said = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        self.view.note(f"$ {' '.join(command)}: {len(lines)} entries back ({said})")

    def summarize(self, produced: set[tuple[str, str]]) -> None:
        groups = {}
        for name, group in flagship.GROUPS.items():
            done = flagship.processed_ids(self.r, group)
            log = flagship.processed(self.r, group)
            groups[name] = {
                "group": group,
                "produced": len(produced),
                "processed": len(done & produced),
                "missing": len(produced - done),
                "unexpected": len(done - produced),
                "processedTwice": len(log) - len(done),
                "ok": done == produced,
            }
        self.summary["groups"] = groups

    def report(self) -> int:
        s = self.summary
        out = self.console
        out.print("\n=== summary " + "=" * 66, highlight=False)
        out.print(
            f"{'group':12s} {'produced':>9s} {'processed':>10s} {'missing':>8s} "
            f"{'dead-lettered':>14s} {'replayed':>9s}  by id",
            highlight=False,
        )
        ok = True
        for name, g in s.get("groups", {}).items():
            ok &= g["ok"]
            out.print(
                f"{name:12s} {g['produced']:9,d} {g['processed']:10,d} {g['missing']:8,d} "
                f"{s.get('deadLettered', {}).get(name, 0):14,d} "
                f"{s.get('replayed', {}).get(name, 0):9,d}  "
                f"{'produced = processed' if g['ok'] else 'MISMATCH'}",
                highlight=False,
            )
        memory = s.get("memory", {})
        mb = lambda n: "?" if n is None else f"{n / 1e6:.2f} MB"  # noqa: E731
        out.print(
            f"call streams: {s.get('streams')} created, {s.get('deletedStreams')} deleted by "
            f"retention, {s.get('streamsLeft')} left (trimmed while live: "
            f"{s.get('trimmedEntries')} entries)\nRedis memory: {mb(memory.get('start'))} at "
            f"the start, {mb(memory.get('peak'))} at the peak, {mb(memory.get('end'))} at the end",
            highlight=False,
        )
        plot = Path(self.args.plot) if self.args.plot else self.workdir / "streamherd-demo.png"
        self.view.plot(plot, "streamherd demo: backlog and replicas per group")
        s["plot"] = str(plot)
        out.print(f"plot: {plot}", highlight=False)
        if self.args.summary_json:
            Path(self.args.summary_json).write_text(json.dumps(s, indent=2))
        return 0 if ok else 1

    def close(self) -> None:
        self.view.stop()
        self.calls.stop()
        self.operator.stop()
        self.kubelet.cleanup()
        self.cluster.stop()
        self.server.cleanup()
        self.r.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="streamherd on a local simulated cluster")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the story")
    parser.add_argument("--surge", type=int, default=40, help="live calls in the surge")
    parser.add_argument("--plain", action="store_true", help="a log instead of the live view")
    parser.add_argument("--redis", default="7.0", choices=["7.0", "8.2"])
    parser.add_argument("--summary-json", help="also write the summary here (JSON)")
    parser.add_argument("--plot", help="where the PNG goes (default: the demo's directory)")
    parser.add_argument(
        "--keep", action="store_true", help="keep running at the end (Ctrl-C stops)"
    )
    args = parser.parse_args()
    story = Story(args)
    try:
        code = story.run()
        if args.keep:
            print(
                f"\nstill running: KUBECONFIG={story.kubeconfig} kubectl get xgroup,xstream"
                "  (Ctrl-C to stop)"
            )
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return code
    finally:
        story.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
