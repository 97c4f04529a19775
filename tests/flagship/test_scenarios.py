"""The flagship's e2e scenario (issue 16): many concurrent calls at ~4 events/s each read by
the three groups, a burst on top drained to zero, random consumer SIGKILLs throughout, a share
of poison events, calls ending (and their streams deleted by retention). Every produced id is
processed at least once by every group, or dead-lettered for that group (checked by id);
every poison event is dead-lettered by every group.

`make test` runs the shortened variant; `make e2e` the full one (STREAMHERD_E2E_SCALE=full:
200 concurrent calls, a 50,000-event burst). Built on e2e/flagship.py, like the demo and
tests/retention/test_flagship.py.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from e2e import flagship
from e2e.cluster.processes import wait_until
from tests.harness import Harness


@dataclass(frozen=True)
class Scale:
    calls: int
    """Concurrent calls while the calls phase lasts."""
    call_turns: int
    """Events per call (4 a second): then it ends and a new call takes its place."""
    seconds: float
    """How long the calls phase lasts."""
    burst: int
    burst_streams: int
    kill_every: float
    poison: float
    """Share of poison events."""
    deadline: float
    """Seconds for everything to be processed once the calls end."""


SCALES = {
    "short": Scale(
        calls=20,
        call_turns=20,
        seconds=10,
        burst=3_000,
        burst_streams=30,
        kill_every=2.5,
        poison=0.01,
        deadline=150,
    ),
    "full": Scale(
        calls=200,
        call_turns=80,
        seconds=60,
        burst=50_000,
        burst_streams=500,
        kill_every=3.0,
        poison=0.002,
        deadline=900,
    ),
}
SCALE = SCALES[os.environ.get("STREAMHERD_E2E_SCALE", "short")]
RETENTION = {"maxAge": "5m", "deleteIdleStreamsAfter": "5s", "interval": "2s"}


def resources(h: Harness) -> list[dict[str, Any]]:
    """The example with SDK consumers of a few ms per event, batches of 20, autoscaling on
    (brain and crm from zero), Claim recovery within seconds, retention deleting ended calls."""
    quick = {
        "pollInterval": "1s",
        "idleBeforeZero": "10s",
        "scaleDown": {"stabilizationWindow": "5s"},
    }
    return flagship.example(
        h.pod_redis_url,
        namespace=h.namespace,
        image=h.consumer_image,
        env={"BATCH": "20", "PROCESSED_LOG": "1"},
        work_ms={"brain": 4, "compliance": 2, "crm": 3},
        autoscaling={
            "brain": {**quick, "targetPerReplica": 400, "maxReplicas": 6},
            "compliance": {**quick, "targetPerReplica": 800, "maxReplicas": 4},
            "crm": {**quick, "targetPerReplica": 800, "maxReplicas": 4},
        },
        recovery={"minIdle": "5s", "interval": "1s", "maxDeliveries": 3},
        retention=RETENTION,
    )


class Killer(threading.Thread):
    """SIGKILLs a random running consumer pod every ``every`` seconds (and deletes it: the
    ReplicaSet replaces it under a new name), until stopped."""

    def __init__(self, h: Harness, kubelet: Any, every: float) -> None:
        super().__init__(daemon=True)
        self.h, self.kubelet, self.every = h, kubelet, every
        self.stop = threading.Event()
        self.killed: list[str] = []
        self.rng = random.Random(16)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            pods = sorted(self.kubelet.processes(self.h.namespace))
            if not pods:
                continue
            victim = self.rng.choice(pods)
            try:
                self.kubelet.kill(victim, self.h.namespace)
                self.h.api.delete("pods", self.h.namespace, victim, gracePeriodSeconds=0)
            except LookupError:
                continue  # gone meanwhile (scaled in)
            self.killed.append(victim)


def explain(h: Harness, kubelet: Any, group: str, missing: set[tuple[str, str]]) -> str:
    """Where the first few missing entries are: their stream, entry, PEL record and copies;
    then, for each consumer holding one, its pod (API and kubelet) and its last log lines."""
    out, owners = [], set()
    for key, origin in sorted(missing)[:5]:
        exists = h.r.exists(key)
        entry = h.r.xrange(key, origin, origin) if exists else []
        pending = h.r.xpending_range(key, group, origin, origin, 1) if exists else []
        owners.update(p["consumer"] for p in pending)
        groups = [g["name"] for g in h.r.xinfo_groups(key)] if exists else []
        consumers = (
            [(c["name"], c["pending"], c["idle"]) for c in h.r.xinfo_consumers(key, group)]
            if group in groups
            else []
        )
        out.append(
            f"{key} {origin}: stream {'exists' if exists else 'gone'}, groups {groups}, "
            f"entry {entry}, pending {pending}, consumers {consumers}, copies "
            f"{[i for i, f in h.r.xrange(key) if f.get('streamherd-origin-id') == origin] if exists else []}"
        )
    running = kubelet.processes(h.namespace)
    for owner in sorted(owners):
        pod = h.api.get("pods", h.namespace, owner)
        state = (
            "no such pod in the API"
            if pod is None
            else f"phase {pod.get('status', {}).get('phase')}, deletion "
            f"{pod['metadata'].get('deletionTimestamp')}"
        )
        out.append(
            f"consumer {owner}: {state}; kubelet process {running.get(owner)}; log tail:\n"
            f"{kubelet.logs(owner, h.namespace)[-2500:]}"
        )
    return "; ".join(out)


@pytest.mark.timeout(SCALE.seconds + 2 * SCALE.deadline + 300)
def test_calls_burst_kills_and_poison_every_id_processed_or_dead_lettered(
    harness: Harness, kubelet: Any
) -> None:
    h, scale = harness, SCALE
    for doc in resources(h):
        h.api.create(doc)
    h.start()
    for name in flagship.GROUPS:
        h.wait_ready("ConsumerGroup", name, timeout=60)
    calls = flagship.Calls(h.redis_server.url, turns=scale.call_turns, poison=scale.poison)
    killer = Killer(h, kubelet, scale.kill_every)
    calls.start()
    killer.start()
    try:
        calls.wanted = scale.calls
        time.sleep(scale.seconds / 3)
        # On top of the live calls; announced a second ahead: a consumer that looks then finds
        # no stream yet (a publisher that registers first), and must still read them.
        calls.burst(scale.burst, scale.burst_streams, announced_ahead=1.0)
        time.sleep(scale.seconds * 2 / 3)
        produced = calls.hang_up()
    finally:
        killer.stop.set()
        killer.join()
        calls.stop()
    poison = calls.poison_ids()
    assert len(produced) >= scale.burst + scale.calls * 4 and poison, "the calls spoke"
    assert len(killer.killed) >= 3, killer.killed

    def settled(group: str) -> bool:
        return not flagship.missing(h.r, group, produced) and poison <= set(
            flagship.dead_letters(h.r, group)
        )

    for name, group in flagship.GROUPS.items():
        wait_until(
            lambda group=group: settled(group),
            scale.deadline,
            interval=1.0,
            message=lambda group=group: (
                f"{group}: {len(flagship.missing(h.r, group, produced))} of {len(produced)} "
                f"neither processed nor dead-lettered: "
                f"{explain(h, kubelet, group, flagship.missing(h.r, group, produced))}\n"
                f"{h.logs()[-3000:]}"
            ),
        )
        drained = h.wait_status(
            "ConsumerGroup",
            name,
            lambda s: s.get("backlog") == 0 and s.get("lagExactness") in ("Exact", "Clamped"),
            timeout=60,
        )
        assert drained["pending"] == 0 and drained["lagSeconds"] == 0, drained
        dead = set(flagship.dead_letters(h.r, group))
        assert dead <= produced, f"{group}: dead letters are of produced events"
        assert poison <= dead, f"{group}: every poison event dead-lettered"
    wait_until(
        lambda: not flagship.call_streams(h.r),
        120,
        interval=1.0,
        message=lambda: f"{len(flagship.call_streams(h.r))} call streams left",
    )
