"""Pytest fixtures for the local cluster (load with ``pytest_plugins = ["e2e.cluster.fixtures"]``).

- ``redis_server``: a real redis-server, parametrised over 7.0 and 8.2;
  ``redis_server_factory(version)`` for more (all stopped after the test).
- ``local_cluster``: the API emulator (our CRDs installed) on its own thread, per test.
- ``kube_api``: its :class:`~e2e.cluster.apiserver.ApiServer` (thread-safe helpers, kmock DSL).
- ``kubelet``: the simulated node (:class:`~e2e.cluster.kubelet.Kubelet`).
- ``kubeconfig``: the path of a kubeconfig for the cluster.
- ``kube_client``: an official ``kubernetes.client.ApiClient`` for it.
- ``run_as_operator(cmd, env=...)``: start a subprocess with KUBECONFIG set; stopped afterwards.

With ``STREAMHERD_E2E_KUBECONFIG=/path`` set, ``kubeconfig``, ``kube_client``, ``kubelet`` and
``run_as_operator`` use that real cluster instead; ``kubelet`` is then a stand-in whose
``kill(pod)`` deletes the pod through the API. Tests needing the emulator itself
(``kube_api``/``local_cluster``) fail there: they test the emulator, not streamherd.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.local import DEFAULT_CRDS, LocalCluster
from e2e.cluster.processes import VENV_BIN, OperatorProcess
from e2e.cluster.redis import VERSIONS, RedisServer
from e2e.cluster.redis import RedisCluster as RedisClusterProcesses

REAL_CLUSTER_ENV = "STREAMHERD_E2E_KUBECONFIG"


def real_cluster_kubeconfig() -> Path | None:
    value = os.environ.get(REAL_CLUSTER_ENV)
    return Path(value) if value else None


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def start(version: str = "7.0", **options: Any) -> RedisServer:
        server = RedisServer(version=version, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture(params=VERSIONS, ids=[f"redis{v}" for v in VERSIONS])
def redis_server(
    request: pytest.FixtureRequest, redis_server_factory: Callable[..., RedisServer]
) -> RedisServer:
    return redis_server_factory(request.param)


@pytest.fixture
def local_cluster() -> Iterator[LocalCluster]:
    if real_cluster_kubeconfig() is not None:
        pytest.fail(
            f"this test needs the local API emulator, not the cluster in ${REAL_CLUSTER_ENV}"
        )
    cluster = LocalCluster(crds=[DEFAULT_CRDS]).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        if cluster.kubelet is not None:
            cluster.kubelet.cleanup()
    errors = list(cluster.api.internal_errors)
    if cluster.kubelet is not None:
        errors += cluster.kubelet.internal_errors
    if errors:
        pytest.fail(f"the local cluster itself failed: {errors!r}")


@pytest.fixture
def kube_api(local_cluster: LocalCluster) -> Any:
    return local_cluster.api


@pytest.fixture
def cluster_objects(request: pytest.FixtureRequest) -> Any:
    """get/list/create/patch/delete of objects: the emulator's store helpers, or the same
    five over the official client on the real cluster in $STREAMHERD_E2E_KUBECONFIG."""
    real = real_cluster_kubeconfig()
    if real is not None:
        from e2e.cluster.objects import ClusterObjects

        request.getfixturevalue("kubeconfig")  # installs our CRDs there once
        return ClusterObjects(real)
    return request.getfixturevalue("kube_api")


class RealClusterKubelet:
    """What the kubelet fixture is on a real cluster: pod helpers via the API."""

    def __init__(self, kubeconfig: Path) -> None:
        import kubernetes

        self.client = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.client)

    def kill(self, pod: str, namespace: str = "default", **_: Any) -> None:
        self.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

    def logs(
        self,
        pod: str,
        namespace: str = "default",
        container: str | None = None,
        previous: bool = False,
    ) -> str:
        kwargs: dict[str, Any] = {"previous": previous}
        if container:
            kwargs["container"] = container
        return str(self.core.read_namespaced_pod_log(pod, namespace, **kwargs))

    def processes(self, namespace: str | None = None) -> dict[str, int | None]:
        pods = (
            self.core.list_namespaced_pod(namespace)
            if namespace
            else self.core.list_pod_for_all_namespaces()
        )
        return {
            p.metadata.name: None
            for p in pods.items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        }


@pytest.fixture
def kubelet(request: pytest.FixtureRequest) -> Any:
    real = real_cluster_kubeconfig()
    if real is not None:
        return RealClusterKubelet(real)
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster.start_kubelet(
        log_dir=request.getfixturevalue("tmp_path") / "pods", stop_grace=0.5
    )


@pytest.fixture
def kubeconfig(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    real = real_cluster_kubeconfig()
    if real is not None:
        _install_crds(real)
        return real
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")


_installed: set[Path] = set()


def _install_crds(kubeconfig: Path) -> None:
    """On a real cluster: apply crds/ once per session."""
    if kubeconfig in _installed:
        return
    subprocess.run(
        [
            os.path.join(VENV_BIN, "kubectl"),
            "--kubeconfig",
            str(kubeconfig),
            "apply",
            "-f",
            str(DEFAULT_CRDS),
        ],
        check=True,
        capture_output=True,
    )
    _installed.add(kubeconfig)


@pytest.fixture
def kube_client(kubeconfig: Path) -> Iterator[Any]:
    import kubernetes

    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def run_as_operator(kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def run(
        cmd: str | list[str], env: dict[str, str] | None = None, **options: Any
    ) -> OperatorProcess:
        log_path = tmp_path / f"operator-{len(started)}.log"
        proc = OperatorProcess(cmd, kubeconfig=kubeconfig, log_path=log_path, env=env, **options)
        started.append(proc)
        return proc.start()

    yield run
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"redis-{v}")
def redis_cluster(request: pytest.FixtureRequest) -> Iterator[RedisClusterProcesses]:
    """A 3-primary Redis Cluster on loopback, per test module and Redis version."""
    started = RedisClusterProcesses(version=request.param).start()
    yield started
    started.cleanup()


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterProcesses) -> AsyncIterator[Any]:
    """A plain cluster client for setting up and checking, on an emptied cluster."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_gateway(
    redis_cluster: RedisClusterProcesses, cluster_client: Any
) -> AsyncIterator[Any]:
    from streamherd.gateway import Endpoint, RedisGateway

    gateway = RedisGateway(Endpoint(url=redis_cluster.url, cluster=True))
    yield gateway
    await gateway.close()
