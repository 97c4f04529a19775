"""Where a ConsumerGroup's consumers run: its Deployment, and that Deployment's pods, known by
identity (owner chain Pod -> ReplicaSet -> Deployment) from kopf's watches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.decisions.recovery import PodRecord, Pods, controller_of, pod_record
from streamherd.decisions.workload import scaler_conflict
from streamherd.kube import KubeClient, KubeError
from streamherd.kube import requests as rq
from streamherd.tasks import cancelled

logger = logging.getLogger(__name__)

OWNED_SUFFIX = "-consumers"


def deployment_name(name: str, spec: ConsumerGroupSpec) -> str | None:
    """The consumer Deployment of ConsumerGroup ``name``: the referenced one, or the one
    streamherd owns (``<name>-consumers``) for a template; None without consumers."""
    if spec.consumers is None:
        return None
    if spec.consumers.deployment_ref is not None:
        return spec.consumers.deployment_ref.name
    return f"{name}{OWNED_SUFFIX}"


def selector(deployment: dict[str, Any]) -> str | None:
    """A Deployment's pod selector as a label-selector string (matchLabels only)."""
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


async def deployment_pods(
    kube: KubeClient, namespace: str, deployment: str
) -> list[dict[str, Any]] | None:
    """Every pod of the Deployment (terminating ones too); None when the Deployment does not
    exist or has no selector (then nobody can say which consumers are alive)."""
    body = await kube.get(rq.DEPLOYMENTS, namespace, deployment)
    labels = selector(body) if body is not None else None
    if labels is None:
        return None
    return await kube.list(rq.PODS, namespace, labels)


async def listed_pod_index(kube: KubeClient, namespace: str, deployment: str) -> PodIndex | None:
    """The Deployment's pods and ReplicaSets from one LIST each (selected by its selector):
    for a one-shot run that has no watch. None when the Deployment does not exist or has no
    selector."""
    body = await kube.get(rq.DEPLOYMENTS, namespace, deployment)
    labels = selector(body) if body is not None else None
    if labels is None:
        return None
    pods = await kube.list(rq.PODS, namespace, labels)
    replicasets = await kube.list(rq.REPLICASETS, namespace, labels)
    return PodIndex.of(pods, replicasets)


def running(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pods that run and are not terminating, by name."""
    return {p["metadata"]["name"]: p for p in pods if pod_record(p).live}


# ------------------------------------------------------------------ pods by identity

PodKey = tuple[str, str]
"""(namespace, name)."""


def pod_by_name(body: Mapping[str, Any]) -> dict[PodKey, PodRecord]:
    """kopf index of every pod: (namespace, pod) -> its record."""
    meta = body["metadata"]
    return {(str(meta["namespace"]), str(meta["name"])): pod_record(body)}


def pod_by_replicaset(body: Mapping[str, Any]) -> dict[PodKey, str] | None:
    """kopf index of pods a ReplicaSet controls: (namespace, replicaset) -> pod name."""
    meta = body["metadata"]
    owner = controller_of(meta, "ReplicaSet")
    return None if owner is None else {(str(meta["namespace"]), owner): str(meta["name"])}


def replicaset_by_deployment(body: Mapping[str, Any]) -> dict[PodKey, str] | None:
    """kopf index of ReplicaSets a Deployment controls: (namespace, deployment) -> name."""
    meta = body["metadata"]
    owner = controller_of(meta, "Deployment")
    return None if owner is None else {(str(meta["namespace"]), owner): str(meta["name"])}


class PodIndex:
    """Pods and ReplicaSets as watches keep them: three kopf indexes (``@kopf.index`` in
    main.py), or the same shapes filled from one LIST each (``streamherd janitor``).

    kopf keeps an index by its watch: an object enters with its first event and leaves with
    its DELETED event. A re-list after a watch gap adds what it lists but discards nothing,
    so a pod deleted during the gap stays "existing" here until the operator restarts: its
    consumer is then never taken for dead (the safe side: its entries are recovered after
    minIdle, like any stale entry). Nothing here ever makes a pod that exists look gone.
    Which pods *were* a Deployment's is PodHistory's part."""

    def __init__(
        self,
        pods: Mapping[PodKey, Iterable[PodRecord]],
        pods_by_replicaset: Mapping[PodKey, Iterable[str]],
        replicasets_by_deployment: Mapping[PodKey, Iterable[str]],
    ) -> None:
        self._pods = pods
        self._by_replicaset = pods_by_replicaset
        self._replicasets = replicasets_by_deployment

    @classmethod
    def of(
        cls, pods: Iterable[Mapping[str, Any]], replicasets: Iterable[Mapping[str, Any]]
    ) -> PodIndex:
        """An index of listed objects (no watch: for a one-shot janitor run)."""
        by_name: dict[PodKey, list[PodRecord]] = {}
        by_replicaset: dict[PodKey, list[str]] = {}
        by_deployment: dict[PodKey, list[str]] = {}
        for pod in pods:
            for key, record in pod_by_name(pod).items():
                by_name.setdefault(key, []).append(record)
            for key, name in (pod_by_replicaset(pod) or {}).items():
                by_replicaset.setdefault(key, []).append(name)
        for rs in replicasets:
            for key, name in (replicaset_by_deployment(rs) or {}).items():
                by_deployment.setdefault(key, []).append(name)
        return cls(by_name, by_replicaset, by_deployment)

    def record(self, namespace: str, name: str) -> PodRecord | None:
        found = self._pods.get((namespace, name))
        return next(iter(found), None) if found is not None else None

    def replicasets_of(self, namespace: str, deployment: str) -> list[str]:
        return list(self._replicasets.get((namespace, deployment)) or ())

    def of_deployment(self, namespace: str, deployment: str) -> list[PodRecord]:
        """The pods whose owner chain leads to the Deployment (Pod -> ReplicaSet -> it)."""
        out = []
        for replicaset in self.replicasets_of(namespace, deployment):
            for name in self._by_replicaset.get((namespace, replicaset)) or ():
                record = self.record(namespace, name)
                if record is not None and record.replicaset == replicaset:
                    out.append(record)
        return out


PRUNE_EVERY = 60.0


class PodHistory:
    """Every pod the operator's watch has seen controlled by a ReplicaSet, under that
    ReplicaSet, kept after the pod is gone: how a janitor knows a consumer's name was a pod of
    its Deployment (kopf's index forgets a pod at its DELETED event). Fed by an
    ``@kopf.on.event`` handler for pods (main.py), which kopf also calls for every pod it
    lists at start-up and after a watch gap, so a pod that exists is always in here.

    A pod taken out of its ReplicaSet (relabelled) stays under the one it had. An entry goes
    ``keep_for`` seconds after the pod's last event (see ``prune``): a consumer whose pod has
    been gone that long is removable as idle anyway. What it cannot know: pods that came and
    went while this process was not watching (before a restart, or before a second replica
    took over); their consumers are not dead, their entries wait for minIdle."""

    def __init__(self, keep_for: float = 6 * 3600.0) -> None:
        self.keep_for = keep_for
        self._by_replicaset: dict[PodKey, dict[str, float]] = {}
        """(namespace, replicaset) -> pod name -> time of its last event."""
        self._pruned_at = 0.0

    def observe(self, body: Mapping[str, Any], now: float) -> None:
        if now - self._pruned_at > PRUNE_EVERY:
            self.prune(now)
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        replicaset = controller_of(meta, "ReplicaSet")
        if replicaset is not None:
            self._by_replicaset.setdefault((namespace, replicaset), {})[name] = now
            return
        for names in self._by_replicaset.values():  # relabelled: keep it where it was
            if name in names:
                names[name] = now

    def names(self, namespace: str, replicaset: str) -> Mapping[str, float]:
        return self._by_replicaset.get((namespace, replicaset)) or {}

    def prune(self, now: float) -> None:
        """Forget pods without an event for ``keep_for``. Safe for a pod that still exists:
        its ReplicaSet comes from the index while it does, and its deletion is an event
        that records it again."""
        self._pruned_at = now
        for key, names in list(self._by_replicaset.items()):
            for name, at in list(names.items()):
                if now - at > self.keep_for:
                    del names[name]
            if not names:
                del self._by_replicaset[key]


class PodTracker:
    """One Deployment's pods as a janitor needs them: who is ours now (owner chain Pod ->
    ReplicaSet -> Deployment), and who was and is gone (deleted, or Succeeded/Failed: their
    consumers are dead). A Job's pod, another Deployment's (a canary ReplicaSet), a pod
    relabelled out of its ReplicaSet (it still exists) are never dead, whatever their names;
    a consumer whose pod this process never saw is not dead either (see PodHistory)."""

    def __init__(
        self, index: PodIndex, history: PodHistory, namespace: str, deployment: str
    ) -> None:
        self.index = index
        self.history = history
        self.namespace = namespace
        self.deployment = deployment

    def view(self) -> Pods:
        current = self.index.of_deployment(self.namespace, self.deployment)
        ours = {p.name for p in current if p.exists}
        gone = set()
        for replicaset in self.index.replicasets_of(self.namespace, self.deployment):
            for name in self.history.names(self.namespace, replicaset):
                record = self.index.record(self.namespace, name)
                if record is None or not record.exists:
                    gone.add(name)
        return Pods(
            self.deployment,
            frozenset(ours),
            frozenset(p.name for p in current if p.live),
            frozenset(gone - ours),
        )


class ScalerIndex:
    """Which Deployments another autoscaler (HPA, KEDA ScaledObject) already drives, per
    namespace, re-listed at most every ``ttl`` seconds.

    The re-list never sits on a decision's path: a stale answer is given at once and the
    lists are refreshed in the background (one refresh per namespace at a time), so a wake
    from zero does not wait for two LISTs (it did, every ``ttl``: the slow wakes of
    `make bench-reaction`). A conflict is then seen at most one refresh after ``ttl``, as
    before. Only a namespace never listed waits: nothing known is not "no other autoscaler"."""

    def __init__(self, kube: KubeClient, ttl: float = 15.0) -> None:
        self._kube = kube
        self._ttl = ttl
        self._cache: dict[str, tuple[float, list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def conflict(self, namespace: str, deployment: str) -> str | None:
        """Who else scales ``deployment``, or None. Fails closed: a list that is refused
        (403) or fails raises KubeError, and the caller does not scale (an HPA it cannot
        see may be there); a resource the cluster does not serve (KEDA not installed) is
        no conflict."""
        hit = self._cache.get(namespace)
        if hit is None:
            await self._list(namespace)  # nothing known: wait (and fail closed) here
            hit = self._cache[namespace]
        elif time.monotonic() - hit[0] > self._ttl and namespace not in self._refreshing:
            task = asyncio.create_task(self._refresh(namespace), name=f"autoscalers {namespace}")
            self._refreshing[namespace] = task
            task.add_done_callback(partial(self._refreshed, namespace))
        return scaler_conflict(deployment, hit[1], hit[2])

    def _refreshed(self, namespace: str, _: asyncio.Task[None]) -> None:
        self._refreshing.pop(namespace, None)

    async def _list(self, namespace: str) -> None:
        hpas = await self._kube.list_if_served(rq.HPAS, namespace)
        scaled = await self._kube.list_if_served(rq.SCALED_OBJECTS, namespace)
        self._cache[namespace] = (time.monotonic(), hpas, scaled)

    async def _refresh(self, namespace: str) -> None:
        """In the background. A refused or failed list forgets what was known: the next
        check lists again itself, and fails closed if it fails too."""
        try:
            await self._list(namespace)
        except KubeError as exc:
            logger.warning("cannot list other autoscalers in %s: %s", namespace, exc)
            self._cache.pop(namespace, None)

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            await cancelled(task)
