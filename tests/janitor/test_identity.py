"""Dead by identity, not by name (issue 10, item 3). Before, any consumer named like
``<deployment>-<hash>-<5 chars>`` that was not a current pod of the Deployment was dead and its
entries taken at once: a Job's pod ``brain-backfill-x7k2p``, a canary ReplicaSet's pod of
another Deployment ``brain-6c9d8f7b5-k3j4h``, a pod relabelled out of its ReplicaSet - the
old pattern matched all three. Now a consumer is dead only when its name was a pod of this
Deployment (owner chain Pod -> ReplicaSet -> Deployment, seen by this janitor) that is gone."""

from __future__ import annotations

from typing import Any

from streamherd.controller.consumers import PodHistory, PodIndex, PodTracker, running
from streamherd.decisions.recovery import plan_consumers, pod_record
from streamherd.observations import ConsumerState

NS = "default"
RS = "brain-6d5f8c9b7a"


def owner(kind: str, name: str) -> dict[str, Any]:
    group = {"ReplicaSet": "apps/v1", "Deployment": "apps/v1", "Job": "batch/v1"}[kind]
    return {
        "apiVersion": group,
        "kind": kind,
        "name": name,
        "uid": f"uid-{name}",
        "controller": True,
    }


def pod(
    name: str, *owners: dict[str, Any], phase: str = "Running", deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "ownerReferences": list(owners)}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def replicaset(name: str, deployment: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "ownerReferences": [owner("Deployment", deployment)],
        }
    }


class Cluster:
    """Pods and ReplicaSets as the watches show them (an index, and the history the pod
    events feed), changed between passes."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.replicasets = [replicaset(RS, "brain"), replicaset("brain-6c9d8f7b5", "brain-canary")]
        self.index = PodIndex({}, {}, {})
        self.history = PodHistory(keep_for=100)
        self.now = 0.0
        self.refresh()

    def tracker(self) -> PodTracker:
        return PodTracker(self.index, self.history, NS, "brain")

    def add(self, body: dict[str, Any]) -> None:
        self.pods[body["metadata"]["name"]] = body
        self.history.observe(body, self.now)
        self.refresh()

    def delete(self, name: str) -> None:
        self.history.observe(self.pods.pop(name), self.now)  # the DELETED event's body
        self.refresh()

    def refresh(self) -> None:
        fresh = PodIndex.of(self.pods.values(), self.replicasets)
        # The tracker holds the index object (kopf's are updated in place): so here.
        self.index.__dict__.update(fresh.__dict__)


def consumers(*names: str) -> list[ConsumerState]:
    return [ConsumerState(name, 3, 10) for name in names]


def dead(tracker: PodTracker, names: list[str]) -> tuple[str, ...]:
    plan = plan_consumers(
        consumers(*names), tracker.view(), min_idle_ms=60_000, remove_idle_after_ms=3_600_000
    )
    return plan.dead


def test_a_pod_of_the_deployment_that_is_gone_is_dead_at_once() -> None:
    cluster = Cluster()
    cluster.add(pod(f"{RS}-aaaaa", owner("ReplicaSet", RS)))
    cluster.add(pod(f"{RS}-bbbbb", owner("ReplicaSet", RS), deleting=True))
    tracker = cluster.tracker()
    view = tracker.view()
    assert (view.ours, view.live, view.gone) == (
        {f"{RS}-aaaaa", f"{RS}-bbbbb"},
        {f"{RS}-aaaaa"},
        set(),
    ), "terminating pods exist (they may still ack) but get no work"
    cluster.delete(f"{RS}-aaaaa")
    cluster.add(pod(f"{RS}-bbbbb", owner("ReplicaSet", RS), phase="Failed"))  # its process ended
    assert dead(tracker, [f"{RS}-aaaaa", f"{RS}-bbbbb"]) == (f"{RS}-aaaaa", f"{RS}-bbbbb")


def test_a_job_pod_a_canary_of_another_deployment_and_a_relabelled_pod_are_not_dead() -> None:
    cluster = Cluster()
    job, canary, relabelled = "brain-backfill-x7k2p", "brain-6c9d8f7b5-k3j4h", f"{RS}-ccccc"
    cluster.add(pod(job, owner("Job", "brain-backfill")))
    cluster.add(pod(canary, owner("ReplicaSet", "brain-6c9d8f7b5")))
    cluster.add(pod(relabelled, owner("ReplicaSet", RS)))
    tracker = cluster.tracker()
    assert tracker.view().ours == {relabelled}, "only the chain to this Deployment counts"

    cluster.delete(job)
    cluster.delete(canary)
    cluster.add(pod(relabelled))  # taken out of its ReplicaSet (no owner any more): still runs
    names = [job, canary, relabelled]
    assert dead(tracker, names) == ()
    plan = plan_consumers(
        consumers(*names), tracker.view(), min_idle_ms=60_000, remove_idle_after_ms=3_600_000
    )
    assert relabelled not in plan.targets, "no longer ours: given no work"
    assert plan.removals == (), "with entries pending, none is removed"

    # Once a pod seen as ours is gone, it is dead, whatever happened to it in between.
    cluster.delete(relabelled)
    assert dead(tracker, names) == (relabelled,)


def test_a_janitor_that_never_saw_a_pod_does_not_take_its_consumer_for_dead() -> None:
    """A restarted operator (or a second replica taking over, or `streamherd janitor`) never
    saw the pods that went away before it started: their consumers wait for minIdle."""
    cluster = Cluster()
    cluster.add(pod(f"{RS}-aaaaa", owner("ReplicaSet", RS)))
    assert dead(cluster.tracker(), [f"{RS}-zzzzz", f"{RS}-aaaaa"]) == ()


def test_a_pod_that_came_and_went_between_two_passes_is_dead_all_the_same() -> None:
    """The history is fed by the watch, not by passes: no pass ever saw this pod run."""
    cluster = Cluster()
    tracker = cluster.tracker()
    assert tracker.view().ours == set()
    cluster.add(pod(f"{RS}-short", owner("ReplicaSet", RS)))
    cluster.delete(f"{RS}-short")
    assert dead(tracker, [f"{RS}-short"]) == (f"{RS}-short",)


def test_a_pod_seen_and_gone_is_forgotten_after_a_while() -> None:
    cluster = Cluster()
    cluster.add(pod(f"{RS}-aaaaa", owner("ReplicaSet", RS)))
    cluster.add(pod(f"{RS}-bbbbb", owner("ReplicaSet", RS)))
    tracker = cluster.tracker()
    cluster.delete(f"{RS}-aaaaa")
    cluster.now = 50
    assert tracker.view().gone == {f"{RS}-aaaaa"}
    cluster.now = 101  # 100 s after its last event
    cluster.history.prune(cluster.now)
    view = tracker.view()
    assert view.gone == set() and view.ours == {f"{RS}-bbbbb"}, "a pod that exists stays ours"
    cluster.delete(f"{RS}-bbbbb")  # its deletion is an event: remembered again
    assert tracker.view().gone == {f"{RS}-bbbbb"}


def test_the_chain_must_hold_at_both_links() -> None:
    """A pod that names a ReplicaSet of ours by name only, or a ReplicaSet that no longer
    controls it, is not ours."""
    cluster = Cluster()
    cluster.add(pod(f"{RS}-aaaaa", {**owner("ReplicaSet", RS), "controller": False}))
    cluster.add(pod(f"{RS}-bbbbb", owner("Deployment", "brain")))  # not through a ReplicaSet
    assert cluster.tracker().view().ours == set()


def test_one_liveness_for_the_janitor_and_the_autoscaler() -> None:
    bodies = [
        pod("a", owner("ReplicaSet", RS)),
        pod("b", owner("ReplicaSet", RS), deleting=True),
        pod("c", owner("ReplicaSet", RS), phase="Succeeded"),
    ]
    assert set(running(bodies)) == {p.name for p in map(pod_record, bodies) if p.live} == {"a"}
    assert [pod_record(b).exists for b in bodies] == [True, True, False]
