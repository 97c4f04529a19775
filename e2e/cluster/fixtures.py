"""Pytest fixtures for the local cluster (load with ``pytest_plugins = ["e2e.cluster.fixtures"]``).

- ``redis_server``: a real redis-server, parametrised over 7.0 and 8.2;
  ``redis_server_factory(version)`` for more (all stopped after the test).
- ``local_cluster``: the API emulator (our CRDs installed) on its own thread, per test.
- ``kube_api``: its :class:`~e2e.cluster.apiserver.ApiServer` (thread-safe helpers, kmock DSL).
- ``kubelet``: the simulated node (:class:`~e2e.cluster.kubelet.Kubelet`).
- ``kubeconfig``: the path of a kubeconfig for the cluster.
- ``kube_client``: an official ``kubernetes.client.ApiClient`` for it.
- ``run_as_operator(cmd, env=...)``: start a subprocess with KUBECONFIG set; stopped afterwards.

Two tiers: the emulator (the default) and a real control plane (``e2e.controlplane``: etcd,
kube-apiserver, kube-controller-manager built from source, and the kubelet as a node agent),
one per session, a namespace per test. A test marked ``@pytest.mark.control_plane`` runs on
both (``[emulator]``/``[control-plane]`` in its id; ``kube_tier`` says which), through the same
fixtures: ``kube_namespace``, ``kubeconfig``, ``cluster_objects``, ``kubelet``,
``run_as_operator``. ``control_plane`` is the session's :class:`ControlPlane` itself.
``STREAMHERD_TIERS=emulator`` leaves the second tier out (for a machine without Go).

With ``STREAMHERD_E2E_KUBECONFIG=/path`` set, ``kubeconfig``, ``kube_client``, ``kubelet`` and
``run_as_operator`` use that real cluster instead (a namespace per test, as on the control
plane); ``kubelet`` is then a stand-in whose
``kill(pod)`` deletes the pod through the API. Tests needing the emulator itself
(``kube_api``/``local_cluster``) fail there: they test the emulator, not streamherd.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.local import DEFAULT_CRDS, LocalCluster
from e2e.cluster.objects import apply_crds
from e2e.cluster.processes import OperatorProcess
from e2e.cluster.redis import VERSIONS, RedisServer
from e2e.cluster.redis import RedisCluster as RedisClusterProcesses

REAL_CLUSTER_ENV = "STREAMHERD_E2E_KUBECONFIG"
TIERS_ENV = "STREAMHERD_TIERS"
EMULATOR, CONTROL_PLANE = "emulator", "control-plane"


def real_cluster_kubeconfig() -> Path | None:
    value = os.environ.get(REAL_CLUSTER_ENV)
    return Path(value) if value else None


def tiers() -> list[str]:
    chosen = [t for t in os.environ.get(TIERS_ENV, f"{EMULATOR},{CONTROL_PLANE}").split(",") if t]
    unknown = set(chosen) - {EMULATOR, CONTROL_PLANE}
    if unknown:
        raise pytest.UsageError(f"${TIERS_ENV}: unknown tiers {sorted(unknown)}")
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "control_plane: run on the emulator and on the real control plane (the kube_tier param)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # With $STREAMHERD_E2E_KUBECONFIG every test runs once, on that cluster.
    if (
        "kube_tier" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("control_plane")
        and real_cluster_kubeconfig() is None
    ):
        metafunc.parametrize("kube_tier", tiers(), indirect=True)


class _SessionControlPlane:
    """The session's control plane and node agent, started once (in the background as soon as
    collection shows a test needs it, so it comes up while the emulator tests run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.control_plane: Any = None
        self.node: Any = None
        self.failure: BaseException | None = None

    def start_in_background(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._start, name="control-plane-start", daemon=True
                )
                self._thread.start()

    def _start(self) -> None:
        try:
            from e2e.controlplane.controlplane import ControlPlane

            self.control_plane = ControlPlane()
            # Its processes run in sessions of their own: stop them even if pytest is cut short.
            atexit.register(self.control_plane.cleanup)
            self.control_plane.start()
            _install_crds(self.control_plane.kubeconfig())
            self.node = self.control_plane.start_node_agent(stop_grace=0.5)
        except BaseException as exc:
            self.failure = exc
        finally:
            self._done.set()

    def get(self, timeout: float = 300.0) -> tuple[Any, Any]:
        self.start_in_background()
        if not self._done.wait(timeout):
            raise RuntimeError("the control plane did not start in time")
        if self.failure is not None:
            raise RuntimeError(f"the control plane did not start: {self.failure}") from self.failure
        return self.control_plane, self.node

    def stop(self) -> None:
        if self._thread is None:
            return
        self._done.wait(300)
        if self.node is not None:
            self.node.stop()
            self.node.cleanup()
        if self.control_plane is not None:
            self.control_plane.cleanup()


_session_control_plane = _SessionControlPlane()


def pytest_collection_finish(session: pytest.Session) -> None:
    needs = any(
        "control_plane" in getattr(item, "fixturenames", ())
        or getattr(getattr(item, "callspec", None), "params", {}).get("kube_tier") == CONTROL_PLANE
        for item in session.items
    )
    if needs and real_cluster_kubeconfig() is None:
        _session_control_plane.start_in_background()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _session_control_plane.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    plane = _session_control_plane.control_plane
    if plane is not None and plane.started_in:
        from e2e.controlplane.build import kubernetes_version

        terminalreporter.write_line(
            f"control plane: Kubernetes {kubernetes_version()} started in {plane.started_in:.1f}s"
        )


@pytest.fixture
def kube_tier(request: pytest.FixtureRequest) -> str:
    """Which cluster the test runs on: "emulator" unless parametrized (the control_plane mark)."""
    return str(getattr(request, "param", EMULATOR))


@pytest.fixture
def control_plane() -> Any:
    """The session's real control plane (:class:`e2e.controlplane.controlplane.ControlPlane`)."""
    if real_cluster_kubeconfig() is not None:
        pytest.fail(
            f"this test needs the built control plane, not the cluster in ${REAL_CLUSTER_ENV}"
        )
    return _session_control_plane.get()[0]


@pytest.fixture
def node_agent(control_plane: Any) -> Iterator[Any]:
    """The session's node (:class:`e2e.cluster.node_agent.NodeAgent`); a test fails if the
    agent itself failed meanwhile."""
    node = _session_control_plane.get()[1]
    before = len(node.internal_errors)
    yield node
    if len(node.internal_errors) > before:
        pytest.fail(f"the node agent itself failed: {node.internal_errors[before:]!r}")


@pytest.fixture
def kube_namespace(request: pytest.FixtureRequest, kube_tier: str) -> Iterator[str]:
    """The namespace a test works in: "default" on the emulator (a cluster per test); a fresh
    one per test on the control plane (the tier, or a test that uses the ``control_plane``
    fixture) and on $STREAMHERD_E2E_KUBECONFIG (the tests there share one cluster too), deleted
    afterwards (after the finalizers of our resources are dropped: their operator is gone by
    then)."""
    real = real_cluster_kubeconfig()
    if real is not None:
        from e2e.cluster.objects import ClusterObjects

        objects = ClusterObjects(real)
        name = f"t-{secrets.token_hex(4)}"
        objects.create_namespace(name)
        yield name
        objects.release_namespace(name)
        return
    if kube_tier != CONTROL_PLANE and "control_plane" not in request.fixturenames:
        yield "default"
        return
    plane = request.getfixturevalue("control_plane")
    name = f"t-{secrets.token_hex(4)}"
    plane.create_namespace(name)
    yield name
    from e2e.controlplane.controlplane import release_namespace

    release_namespace(plane, name)


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
def cluster_objects(request: pytest.FixtureRequest, kube_tier: str) -> Any:
    """get/list/create/patch/delete of objects: the emulator's store helpers, or the same
    five over the official client on the control plane or the cluster in
    $STREAMHERD_E2E_KUBECONFIG."""
    if real_cluster_kubeconfig() is not None or kube_tier == CONTROL_PLANE:
        from e2e.cluster.objects import ClusterObjects

        return ClusterObjects(request.getfixturevalue("kubeconfig"))  # CRDs installed there
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
def kubelet(request: pytest.FixtureRequest, kube_tier: str) -> Any:
    real = real_cluster_kubeconfig()
    if real is not None:
        return RealClusterKubelet(real)
    if kube_tier == CONTROL_PLANE:
        return request.getfixturevalue("node_agent")
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster.start_kubelet(
        log_dir=request.getfixturevalue("tmp_path") / "pods", stop_grace=0.5
    )


@pytest.fixture
def kubeconfig(request: pytest.FixtureRequest, tmp_path: Path, kube_tier: str) -> Path:
    real = real_cluster_kubeconfig()
    if real is not None:
        _install_crds(real)
        return real
    if kube_tier == CONTROL_PLANE:
        plane = request.getfixturevalue("control_plane")
        namespace = request.getfixturevalue("kube_namespace")
        return plane.write_kubeconfig(tmp_path / "kubeconfig", "admin", namespace)  # type: ignore[no-any-return]
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")


_installed: set[Path] = set()


def _install_crds(kubeconfig: Path) -> None:
    """On a real cluster: apply crds/ once per session, and wait until they are served."""
    if kubeconfig in _installed:
        return
    apply_crds(kubeconfig, DEFAULT_CRDS)
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
