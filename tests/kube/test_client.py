"""The operator's Kubernetes client (kube.client, kube.auth, kube.budget, kube.events) against
API servers that misbehave as real ones do: the emulator with kmock's fault injection (APF's
429 with Retry-After and a plain-text body, 503s), and the real control plane's short-lived
ServiceAccount tokens, renewed through a kubeconfig exec plugin."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from e2e.cluster.local import LocalCluster
from e2e.cluster.processes import wait_until
from e2e.controlplane.controlplane import ControlPlane
from tests.cluster.test_kubelet import deployment

from streamherd.kube import Credentials, Forbidden, KubeClient, Limits, Unavailable
from streamherd.kube import requests as rq

CONFIGMAPS = rq.Resource("", "v1", "configmaps", "ConfigMap")
APF_BODY = "Too many requests, please try again later."  # what kube-apiserver's APF answers


def web(api: Any) -> str:
    """A Deployment "web" (one replica) in the emulator; its /scale path."""
    api.create(deployment("web", ["true"]))
    return "/apis/apps/v1/namespaces/default/deployments/web/scale"


class Storm:
    """A kmock filter matching requests to ``path`` until ``seconds`` from now or ``stop()``
    (a time window, not a count: kmock may evaluate a filter more than once per request)."""

    def __init__(self, path: str, seconds: float = math.inf) -> None:
        self.path, self.until = path, time.monotonic() + seconds

    def stop(self) -> None:
        self.until = 0.0

    def __call__(self, request: Any) -> bool:
        return bool(request.url.path == self.path and time.monotonic() < self.until)


@pytest.fixture
def emulated(local_cluster: LocalCluster, tmp_path: Path) -> Credentials:
    return Credentials(kubeconfig=local_cluster.write_kubeconfig(tmp_path / "kubeconfig"))


async def test_a_429_storm_is_waited_out_honouring_retry_after(
    local_cluster: LocalCluster, emulated: Credentials
) -> None:
    api = local_cluster.api
    scale = web(api)
    api[Storm(scale, 1.5)] << 429 << kmock.headers({"Retry-After": "1"}) << kmock.text(APF_BODY)
    kube = KubeClient(emulated, retry_for=20)
    retries: list[str] = []
    kube.on_retry = lambda request, why: retries.append(why)
    try:
        started = time.monotonic()
        await kube.scale("default", "web", 3)
        waited = time.monotonic() - started
    finally:
        await kube.close()
    assert api.get("deployments.apps", "default", "web")["spec"]["replicas"] == 3
    # Retry-After: 1 is honoured (no backoff's quarter second): one or two retries a second
    # apart cover the 1.5 s storm, never a burst of them.
    assert 1 <= len(retries) <= 2, retries
    assert set(retries) == {"Too Many Requests"}
    assert waited >= 1.0


async def test_sustained_5xx_gives_up_as_unavailable_naming_the_request(
    local_cluster: LocalCluster, emulated: Credentials
) -> None:
    api = local_cluster.api
    scale = web(api)
    api[Storm(scale)] << 503 << {"kind": "Status", "reason": "ServiceUnavailable"}
    kube = KubeClient(emulated, retry_for=2)
    retries: list[str] = []
    kube.on_retry = lambda request, why: retries.append(why)
    try:
        with pytest.raises(Unavailable) as failed:
            await kube.scale("default", "web", 3)
    finally:
        await kube.close()
    assert len(retries) >= 2, "jittered backoff from 0.25 s: several attempts within 2 s"
    assert failed.value.status == 503
    assert failed.value.action == "patch deployments/scale in namespace 'default'"
    assert "gave up after" in failed.value.message
    assert api.get("deployments.apps", "default", "web")["spec"]["replicas"] == 1


async def test_writes_are_capped_by_the_budget_reads_are_not_held_behind_them(
    local_cluster: LocalCluster, emulated: Credentials
) -> None:
    web(local_cluster.api)
    kube = KubeClient(emulated, Limits(write_qps=5, write_burst=2))
    try:
        started = time.monotonic()
        for replicas in range(2, 10):  # 8 writes: a burst of 2, then 6 at 5/s
            await kube.scale("default", "web", replicas)
        writes = time.monotonic() - started
        started = time.monotonic()
        for _ in range(8):
            await kube.get(rq.DEPLOYMENTS, "default", "web")
        reads = time.monotonic() - started
    finally:
        await kube.close()
    assert writes >= 6 / 5 * 0.95, f"8 writes in {writes:.2f}s: the budget was not applied"
    assert reads < writes, "reads have their own bucket"


async def test_a_repeated_event_reason_updates_one_event(
    local_cluster: LocalCluster, emulated: Credentials
) -> None:
    api = local_cluster.api
    web(api)
    target = api.get("deployments.apps", "default", "web")
    kube = KubeClient(emulated)
    try:
        for n in range(3):
            await kube.post_event(target, type_="Warning", reason="Flapping", message=f"#{n}")
        await kube.post_event(target, type_="Normal", reason="Other", message="once")
    finally:
        await kube.close()
    events = [e for e in api.list("events", "default") if e["involvedObject"]["name"] == "web"]
    by_reason = {e["reason"]: e for e in events}
    assert len(events) == 2, events
    assert by_reason["Flapping"]["count"] == 3
    assert by_reason["Flapping"]["message"] == "#2"
    assert by_reason["Other"]["count"] == 1


async def test_kopf_relogin_reloads_the_credentials_and_rebuilds_our_session(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """kopf logs in again when its vault was invalidated (a 401 that survived): our login
    handler reloads the kubeconfig, and our client's next request goes on a new session with
    the new token (the old session is retired, not cut mid-request)."""
    api = local_cluster.api
    path = local_cluster.write_kubeconfig(tmp_path / "kubeconfig")
    credentials = Credentials(kubeconfig=path)
    kube = KubeClient(credentials)
    try:
        await kube.list(CONFIGMAPS, "default")
        first = await credentials.kopf_login()  # start-up: loads once, no reload
        await first.aiohttp_session.close()
        assert kube.sessions_made == 1
        config = yaml.safe_load(path.read_text())
        config["users"][0]["user"]["token"] = "rotated-token"
        path.write_text(yaml.safe_dump(config))
        again = await credentials.kopf_login()  # kopf's re-login
        await again.aiohttp_session.close()
        await kube.list(CONFIGMAPS, "default")
        assert kube.sessions_made == 2
        assert (
            api["get /api/v1/namespaces/default/configmaps"][-1].headers["Authorization"]
            == "Bearer rotated-token"
        )
    finally:
        await kube.close()


# ------------------------------------------------------------------ the real control plane


def exec_kubeconfig(plane: ControlPlane, path: Path, token_file: Path, namespace: str) -> Path:
    """A kubeconfig whose user is an exec credential plugin (as EKS's and GKE's are) that
    prints whatever token ``token_file`` holds now."""
    plugin = path.parent / "token-plugin.py"
    plugin.write_text(
        "import json, sys, pathlib\n"
        "token = pathlib.Path(sys.argv[1]).read_text().strip()\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': {'token': token}}))\n"
    )
    config = plane.kubeconfig_dict("admin", namespace)
    config["users"] = [
        {
            "name": "exec",
            "user": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": sys.executable,
                    "args": [str(plugin), str(token_file)],
                    "interactiveMode": "Never",
                }
            },
        }
    ]
    config["contexts"][0]["context"]["user"] = "exec"
    path.write_text(yaml.safe_dump(config))
    return path


def reader(plane: ControlPlane, namespace: str, name: str) -> None:
    """A ServiceAccount that may get ConfigMaps in ``namespace`` and nothing else."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    for path, body in (
        (
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        ),
        (
            f"{rbac}/roles",
            {
                "kind": "Role",
                "metadata": {"name": name},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
            },
        ),
        (
            f"{rbac}/rolebindings",
            {
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        ),
        (
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        ),
    ):
        reply = plane.request("POST", path, body)
        assert reply.status == 201, (path, reply.status, reply.body)


async def test_an_expired_token_is_renewed_from_an_exec_plugin_and_a_projected_token(
    control_plane: ControlPlane,
    kube_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both ways a token rotates under the operator, at once (one expiry to wait for): a
    kubeconfig exec plugin (EKS, GKE), and the projected ServiceAccount token file the kubelet
    rewrites in a pod (the in-cluster path, from a temporary directory)."""
    plane, ns = control_plane, kube_namespace
    reader(plane, ns, "rotating")
    first = plane.signed_service_account_token(ns, "rotating", valid_for=5)
    plugin_token = tmp_path / "token"
    plugin_token.write_text(first)
    pod = tmp_path / "serviceaccount"
    pod.mkdir()
    (pod / "token").write_text(first)
    (pod / "ca.crt").write_bytes(plane.ca_file.read_bytes())
    (pod / "namespace").write_text(ns)
    host, port = plane.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("STREAMHERD_SERVICE_ACCOUNT_DIR", str(pod))
    sources = {
        "exec": Credentials(
            kubeconfig=exec_kubeconfig(plane, tmp_path / "kubeconfig", plugin_token, ns)
        ),
        "projected": Credentials(),  # no kubeconfig: in a "pod"
    }
    clients = {name: KubeClient(credentials) for name, credentials in sources.items()}
    path = f"/api/v1/namespaces/{ns}/configmaps/c"
    try:
        # RBAC is evaluated against an informer-fed cache: wait until it has the binding.
        wait_until(lambda: plane.client(token=first).get(path).status == 200, 30)
        for kube in clients.values():
            assert await kube.get(CONFIGMAPS, ns, "c") is not None
        assert sources["projected"].default_namespace == ns
        # The kubelet (here: the test) rotates the tokens; the old one expires meanwhile.
        plugin_token.write_text(plane.request_token(ns, "rotating", 600))
        (pod / "token").write_text(plane.request_token(ns, "rotating", 600))
        wait_until(
            lambda: plane.client(token=first).get(path).status == 401,
            30,
            interval=0.25,
            message="the first token never expired",
        )
        # The next request meets a 401, reloads the credentials (the plugin runs again, the
        # file is read again) and is repeated with the new token: the caller sees no 401.
        for name, kube in clients.items():
            assert await kube.get(CONFIGMAPS, ns, "c") is not None, name
            assert sources[name].renewals == 1, name
        # A 403 is not a 401: no renewal, a Forbidden that names what to grant.
        with pytest.raises(Forbidden) as denied:
            await clients["exec"].list(CONFIGMAPS, ns)
        assert denied.value.action == f"list configmaps in namespace {ns!r}"
        assert sources["exec"].renewals == 1
    finally:
        for kube in clients.values():
            await kube.close()
