"""What every reconcile loop shares: clients, pollers, the streams known so far, metrics."""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streamherd.api import CONSUMER_GROUP
from streamherd.api.redisstream import RedisEndpoint, RedisStreamSpec
from streamherd.controller.board import RetentionBoard
from streamherd.controller.consumers import PodHistory, ScalerIndex
from streamherd.controller.deployments import DeploymentIndex
from streamherd.controller.durability import DurabilityWatch
from streamherd.controller.polling import Endpoints, Poller, Source
from streamherd.controller.reporting import StatusBudget
from streamherd.decisions.conditions import Verdict
from streamherd.decisions.recovery import RecoveryFindings
from streamherd.gateway.endpoint import (
    Endpoint,
    SecretMissing,
    referenced_secrets,
    resolve_endpoint,
)
from streamherd.kube import KubeClient
from streamherd.kube import requests as rq
from streamherd.metrics import Metrics
from streamherd.tasks import Signal

CLOSE_DRAIN_SECONDS = 1.0
"""How long the operator's shutdown (or a leader stepping down) still sends queued writes."""
STATUS_INTERVAL = 10.0
"""The default --status-interval."""
STATUS_WRITES_PER_SECOND = 10.0
"""The default --status-writes-per-second: below the client's write budget (--api-write-qps,
15), so that 5 a second stay for conditions, scale actions and Events, which then never
queue behind numbers."""


@dataclass
class StreamBinding:
    """A RedisStream as the operator currently knows it: where it lives, or why it can't be
    used. ConsumerGroups find their stream here."""

    namespace: str
    name: str
    source: Source | None = None
    create_if_missing: bool = True
    poller: Poller | None = None
    problem: Verdict | None = None
    spec: RedisStreamSpec | None = None

    def in_use(self) -> InUse | None:
        """Its poller and source, when ConsumerGroups can use the stream now."""
        if self.poller is None or self.source is None or self.problem is not None:
            return None
        return InUse(self.poller, self.source)


class InUse(NamedTuple):
    """A usable RedisStream's poller and source (see ``StreamBinding.in_use``)."""

    poller: Poller
    source: Source


class SecretCache:
    """Secret values by (namespace, name), re-read after ``ttl`` seconds: a Secret that
    appears or changes is picked up without a restart, without a GET per poll."""

    def __init__(self, kube: KubeClient, ttl: float = 3.0) -> None:
        self._kube = kube
        self._ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, dict[str, bytes] | None]] = {}

    async def get(self, namespace: str, name: str) -> dict[str, bytes] | None:
        now = time.monotonic()
        hit = self._cache.get((namespace, name))
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        body = await self._kube.get(rq.SECRETS, namespace, name)
        data = None
        if body is not None:
            data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (body.get("stringData") or {}).items()})
        self._cache[(namespace, name)] = (now, data)
        return data

    async def resolve(self, namespace: str, spec: RedisEndpoint) -> Endpoint:
        """The endpoint with its Secrets read; raises SecretMissing naming what is missing."""
        secrets: dict[str, dict[str, bytes] | None] = {}
        for name in referenced_secrets(spec):
            secrets[name] = await self.get(namespace, name)

        def read(name: str, key: str) -> bytes:
            data = secrets.get(name)
            if data is None:
                raise SecretMissing(name)
            if key not in data:
                raise SecretMissing(name, key)
            return data[key]

        return resolve_endpoint(spec, read)


def group_id(body: Mapping[str, Any]) -> str:
    """How the loops name a ConsumerGroup in claims and wake-ups: "ConsumerGroup:<ns>/<name>"."""
    return f"{CONSUMER_GROUP.kind}:{body['metadata']['namespace']}/{body['metadata']['name']}"


def claim_target(binding: StreamBinding, group: str) -> tuple[str, ...]:
    """How this process's loops name one group on one RedisStream (the janitor asks the group
    loop's verdict by it)."""
    assert binding.poller is not None and binding.source is not None
    return (binding.poller.gateway.endpoint.display, binding.source.text, group)


class GroupClaims:
    """Which group loops of this process manage their group now, by ``claim_target``: a
    cache of what the claims recorded in Redis decided (decisions.ownership; the group loop
    re-reads them every OWNERSHIP_REFRESH_SECONDS). The janitor acts only for a holder.
    Consistent across re-lists and restarts because Redis, not this map, is the record: the
    map starts empty and each loop fills it in at its first claim."""

    def __init__(self) -> None:
        self._holders: dict[tuple[str, ...], str] = {}

    def hold(self, target: tuple[str, ...], who: str) -> None:
        self._holders[target] = who

    def owner(self, target: tuple[str, ...]) -> str | None:
        return self._holders.get(target)

    def release(self, who: str) -> None:
        for target in [t for t, holder in self._holders.items() if holder == who]:
            del self._holders[target]


@dataclass
class Context:
    kube: KubeClient
    metrics: Metrics
    endpoints: Endpoints
    secrets: SecretCache
    streams: dict[tuple[str, str], StreamBinding] = field(default_factory=dict)
    claims: GroupClaims = field(default_factory=GroupClaims)
    wakeups: dict[str, dict[str, Signal]] = field(default_factory=lambda: defaultdict(dict))
    """Per resource, one event per loop that works on it (the group's, the janitor's)."""
    recovery_findings: dict[str, RecoveryFindings] = field(default_factory=dict)
    """Per ConsumerGroup (``who``), what its janitor's last pass found for the group loop's
    conditions. In memory: the next pass after a restart finds it again."""
    api_problems: dict[str, Verdict] = field(default_factory=dict)
    """Per resource (``who``), a Ready=False verdict from a loop other than its own whose
    Kubernetes request was refused (the janitor's CronJob), until that loop succeeds: the
    resource's own loop reports it (a condition, never only a log line)."""
    pod_history: PodHistory = field(default_factory=PodHistory)
    """Pods seen controlled by a ReplicaSet, kept after they are gone (dead consumers)."""
    deployments: DeploymentIndex = field(init=False)
    """The Deployments groups reference (controller/deployments: what keeps it right)."""
    scalers: ScalerIndex = field(init=False)
    """Other autoscalers (HPA, KEDA) per namespace."""
    durability: DurabilityWatch = field(init=False)
    """Each endpoint's persistence and replication, read once a minute."""
    started_at: float = field(default_factory=time.monotonic)
    startup_grace: float = 30.0
    retention: RetentionBoard = field(default_factory=RetentionBoard)
    """Groups holding retention back (written by RetentionPolicy loops, read by groups)."""
    status_interval: float = STATUS_INTERVAL
    """Seconds between writes of a resource's status numbers (--status-interval)."""
    status_budget: StatusBudget = field(default_factory=StatusBudget)
    """Status writes of numbers alone per second, over every group and stream
    (--status-writes-per-second)."""
    stream_groups: Mapping[tuple[str, str], Collection[Any]] = field(default_factory=dict)
    """kopf's index of ConsumerGroups by (namespace, RedisStream): (group, startId, created)."""
    policies: Mapping[tuple[str, str], Collection[Any]] = field(default_factory=dict)
    """kopf's index of RetentionPolicies by (namespace, name). kopf fills both indexes from
    its watches (re-lists included) before any resource handler runs."""

    @classmethod
    def create(
        cls,
        kube: KubeClient,
        metrics: Metrics | None = None,
        poller_options: dict[str, Any] | None = None,
        **gateway_options: Any,
    ) -> Context:
        metrics = metrics or Metrics()
        return cls(
            kube=kube,
            metrics=metrics,
            endpoints=Endpoints(metrics, poller_options, **gateway_options),
            secrets=SecretCache(kube),
        )

    def __post_init__(self) -> None:
        self.scalers = ScalerIndex(self.kube)
        self.deployments = DeploymentIndex(self.kube)
        self.durability = DurabilityWatch(self.metrics)
        requests = self.metrics.api_requests
        self.status_budget.on_interval = self.metrics.status_interval.set
        self.metrics.watch_write_queue(self.kube.queue.oldest)
        self.kube.on_request = lambda r: requests.labels(r.method, r.resource).inc()

    def young(self) -> bool:
        """Within the start-up grace: resources may still be waiting for their loops."""
        return time.monotonic() - self.started_at < self.startup_grace

    def wakeup(self, who: str, loop: str = "main") -> Signal:
        """The signal that tells one loop working on ``who`` its object changed."""
        return self.wakeups[who].setdefault(loop, Signal())

    def wake(self, who: str) -> None:
        """Tell every loop working on a resource its object changed: act now, not at the
        next poll or interval."""
        for event in self.wakeups[who].values():
            event.set()

    async def close(self) -> None:
        await self.deployments.close()
        await self.scalers.close()
        await self.endpoints.close()
        # The last statuses and Events, briefly (a leader stepping down still holds its
        # Lease for a while); what is left is written afresh by the next leader's loops.
        await self.kube.drain(CLOSE_DRAIN_SECONDS)
        await self.kube.close()
