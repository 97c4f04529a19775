"""The operator as a real process (`streamherd run`) against the local cluster and a real
redis-server: what every operator test stands on."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from e2e import consumer
from e2e.cluster.fixtures import CONTROL_PLANE, real_cluster_kubeconfig
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import SERVERS, RedisServer, free_port

GROUP = "streamherd.io/v1alpha1"
KINDS = {
    "RedisStream": "redisstreams.streamherd.io",
    "ConsumerGroup": "consumergroups.streamherd.io",
    "RetentionPolicy": "retentionpolicies.streamherd.io",
    "Secret": "secrets",
    "Deployment": "deployments.apps",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
    "CronJob": "cronjobs.batch",
}


@dataclass
class Harness:
    api: Any
    redis_server: RedisServer
    start_operator: Callable[..., OperatorProcess]
    namespace: str = "default"
    watch_namespace: bool = False  # the operator watches only ``namespace`` (not the cluster)
    operator_env: dict[str, str] = field(default_factory=dict)  # e.g. its own KUBECONFIG
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    operator: OperatorProcess | None = None
    _redis: redis.Redis | None = None

    # ------------------------------------------------------------ the operator

    def start(self, *extra: str, env: dict[str, str] | None = None) -> OperatorProcess:
        self.operator = self.start_operator(
            [
                "streamherd",
                "run",
                "--metrics-port",
                str(self.metrics_port),
                "--health-port",
                str(self.health_port),
                "--log-level",
                "DEBUG",
                # Status numbers within a second, as the tests wait on them (the defaults,
                # 10 s and 10 writes/s in all, are the write budget of a real cluster; a
                # test may pass its own).
                "--status-interval",
                "1",
                "--status-writes-per-second",
                "0",
                *(["--namespace", self.namespace] if self.watch_namespace else []),
                *extra,
            ],
            env={**self.operator_env, **(env or {})},
        )
        wait_until(
            self.healthy, 20, message=lambda: f"operator not healthy:\n{self.logs()[-3000:]}"
        )
        return self.operator

    def healthy(self) -> bool:
        assert self.operator is not None
        if not self.operator.running:
            raise RuntimeError(f"the operator exited:\n{self.logs()[-4000:]}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as r:
                return r.status == 200
        except OSError:
            return False

    def logs(self) -> str:
        return self.operator.logs() if self.operator else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples that carry ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith((name + "{", name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(kind, name).get("conditions") or []:
            if condition["type"] == type_:
                return condition  # type: ignore[no-any-return]
        return {}

    # ------------------------------------------------------------ Redis

    def consumer_deployment(
        self, name: str, replicas: int, group: str, stream: str = "orders", **env: str
    ) -> dict[str, Any]:
        """A Deployment of real consumers (e2e/consumer.py) that the kubelet runs."""
        body = consumer.deployment(
            name,
            redis_url=self.pod_redis_url,
            group=group,
            stream=stream,
            replicas=replicas,
            image=self.consumer_image,
            namespace=self.namespace,
            env=env,
        )
        return self.api.create(body)  # type: ignore[no-any-return]

    @property
    def consumer_image(self) -> str:
        """The image of consumer pods. The simulated kubelet runs the command and ignores the
        image; a real cluster needs one with this repository's e2e/consumer.py in it."""
        return os.environ.get("STREAMHERD_E2E_CONSUMER_IMAGE", consumer.IMAGE)

    @property
    def pod_redis_url(self) -> str:
        """The Redis URL for consumer pods: here the kubelet runs them on this machine; on a
        real cluster they need a host they can reach ($STREAMHERD_E2E_POD_REDIS_HOST)."""
        host = os.environ.get("STREAMHERD_E2E_POD_REDIS_HOST")
        url = self.redis_server.url
        return url.replace(self.redis_server.host, host, 1) if host else url

    @property
    def r(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis(
                host=self.redis_server.host, port=self.redis_server.port, decode_responses=True
            )
        return self._redis

    def groups_in_redis(self, key: str) -> dict[str, dict[str, Any]]:
        try:
            return {g["name"]: g for g in self.r.xinfo_groups(key)}
        except redis.ResponseError:
            return {}

    # ------------------------------------------------------------ Kubernetes objects

    def create(
        self, kind: str, name: str, spec: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "apiVersion": {
                "Secret": "v1",
                "Deployment": "apps/v1",
                "HorizontalPodAutoscaler": "autoscaling/v2",
            }.get(kind, GROUP),
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace, **extra.pop("metadata", {})},
        }
        if spec is not None:
            obj["spec"] = spec
        obj.update(extra)
        return self.api.create(obj)  # type: ignore[no-any-return]

    def stream(
        self,
        name: str = "orders",
        key: str | None = "orders",
        metadata: dict[str, Any] | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        spec.setdefault("redis", {"url": self.redis_server.url})
        if key is not None and "keyPattern" not in spec:
            spec["key"] = key
        return self.create("RedisStream", name, spec, metadata=metadata or {})

    def group(
        self, name: str, stream: str = "orders", metadata: dict[str, Any] | None = None, **spec: Any
    ) -> dict[str, Any]:
        return self.create(
            "ConsumerGroup", name, {"streamRef": {"name": stream}, **spec}, metadata=metadata or {}
        )

    def autoscaled_workers(
        self,
        replicas: int,
        *,
        start_id: str = "0",
        env: dict[str, str] | None = None,
        **scaling: Any,
    ) -> None:
        """The scaling tests' common set-up: a RedisStream ``orders``, a Deployment ``workers``
        of real consumers (``replicas`` at first, with ``env``) and a ConsumerGroup
        ``workers`` that autoscales it: 0-4 replicas at 100 entries each, scaling down
        without a window and to zero after 1 s idle, unless ``scaling`` says otherwise."""
        self.consumer_deployment("workers", replicas, "workers", **(env or {}))
        self.stream("orders")
        self.group(
            "workers",
            startId=start_id,
            consumers={"deploymentRef": {"name": "workers"}},
            autoscaling={
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetPerReplica": 100,
                "scaleDown": {"stabilizationWindow": "0s"},
                "idleBeforeZero": "1s",
                **scaling,
            },
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.api.get(KINDS[kind], self.namespace, name)  # type: ignore[no-any-return]

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch(KINDS[kind], self.namespace, name, patch)  # type: ignore[no-any-return]

    def delete(self, kind: str, name: str) -> None:
        self.api.delete(KINDS[kind], self.namespace, name)

    def status(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, name) or {}
        return obj.get("status") or {}

    def ready(self, kind: str, name: str) -> dict[str, Any]:
        return self.condition(kind, name, "Ready")

    def wait_status(
        self, kind: str, name: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 20
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(kind, name)
            return status if predicate(status) else None

        return wait_until(
            check,
            timeout,
            interval=0.05,
            message=lambda: (
                f"{kind} {name} status never matched; last: {self.status(kind, name)}\n{self.logs()[-3000:]}"
            ),
        )

    def wait_ready(
        self,
        kind: str,
        name: str,
        status: str = "True",
        reason: str | None = None,
        timeout: float = 20,
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            ready = self.ready(kind, name)
            if ready.get("status") == status and (reason is None or ready.get("reason") == reason):
                return ready
            return None

        return wait_until(
            check,
            timeout,
            interval=0.05,
            message=lambda: (
                f"{kind} {name} never Ready={status} {reason or ''}; last: {self.ready(kind, name)}\n{self.logs()[-3000:]}"
            ),
        )

    def wait_gone(self, kind: str, name: str, timeout: float = 20) -> None:
        wait_until(
            lambda: self.get(kind, name) is None,
            timeout,
            message=lambda: (
                f"{kind} {name} still there: {self.get(kind, name)}\n{self.logs()[-3000:]}"
            ),
        )

    def wait_event(
        self, name: str, reason: str, type_: str | None = None, timeout: float = 15
    ) -> tuple[str, str, str]:
        """The first Event ``reason`` (of ``type_``) on ``name``, waiting for it: the operator
        queues its Events (kube/queue.py), so one may reach the API server after the status
        write a test waited for."""
        return wait_until(  # type: ignore[no-any-return]
            lambda: next(
                (e for e in self.events(name) if e[1] == reason and type_ in (None, e[0])), None
            ),
            timeout,
            message=lambda: f"no {type_ or ''} Event {reason} on {name}: {self.events(name)}",
        )

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """One (type, reason, message) per occurrence: the operator aggregates a repeated
        reason into one Event's ``count`` (its message is the latest)."""
        return [
            (e["type"], e["reason"], e["message"])
            for e in self.api.list("events", self.namespace)
            if e["involvedObject"]["name"] == name
            for _ in range(int(e.get("count") or 1))
        ]


def make_harness(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    cluster_objects: Any,
    kube_namespace: str,
    kube_tier: str,
    run_as_operator: Callable[..., OperatorProcess],
) -> Harness:
    h = Harness(
        api=cluster_objects,
        redis_server=redis_server,
        start_operator=run_as_operator,
        namespace=kube_namespace,
    )
    if real_cluster_kubeconfig() is not None:
        h.watch_namespace = True  # the cluster's other tests' namespaces are not its own
    if kube_tier == CONTROL_PLANE:
        from e2e.controlplane.rbac import operator_kubeconfig

        # One control plane serves the session's tests: each operator keeps to its namespace,
        # as a ServiceAccount with exactly the RBAC the README documents (not as admin).
        h.watch_namespace = True
        path = request.getfixturevalue("tmp_path") / "operator.kubeconfig"
        sa_config = operator_kubeconfig(
            request.getfixturevalue("control_plane"), kube_namespace, path
        )
        h.operator_env["KUBECONFIG"] = str(sa_config)
    return h


@pytest.fixture
def harness(
    request: pytest.FixtureRequest,
    cluster_objects: Any,
    kubeconfig: Path,
    kube_namespace: str,
    kube_tier: str,
    run_as_operator: Callable[..., OperatorProcess],
    redis_server_factory: Callable[..., RedisServer],
) -> Iterator[Harness]:
    """An operator-ready harness on redis 7.0 (the gateway's own tests cover 8.2 in depth);
    call ``harness.start()`` once the objects the test needs before start-up exist. Its
    ``namespace`` is the test's (``kube_namespace``)."""
    h = make_harness(
        request,
        redis_server_factory("7.0"),
        cluster_objects,
        kube_namespace,
        kube_tier,
        run_as_operator,
    )
    yield h
    if h._redis is not None:
        h._redis.close()


@pytest.fixture(params=SERVERS, ids=lambda v: v if "valkey" in v else f"redis{v}")
def harness_any_redis(
    request: pytest.FixtureRequest,
    cluster_objects: Any,
    kubeconfig: Path,
    kube_namespace: str,
    kube_tier: str,
    run_as_operator: Callable[..., OperatorProcess],
    redis_server_factory: Callable[..., RedisServer],
) -> Iterator[Harness]:
    h = make_harness(
        request,
        redis_server_factory(request.param),
        cluster_objects,
        kube_namespace,
        kube_tier,
        run_as_operator,
    )
    yield h
    if h._redis is not None:
        h._redis.close()
