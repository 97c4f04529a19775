"""Real clients, unmodified, against the emulator: kubernetes, kubectl, aiohttp, kopf."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
import yaml
from e2e.cluster.client import KubeHTTP
from e2e.cluster.processes import VENV_BIN, wait_until
from tests.cluster.conftest import WIDGET_CRD, widget

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "consumergroup.yaml"


def test_official_kubernetes_client(kube_client: Any) -> None:
    """The official client: namespaces (which kmock alone cannot create), typed objects,
    custom objects with their status, 409 on a stale replace, and a watch."""
    core = kubernetes.client.CoreV1Api(kube_client)
    apps = kubernetes.client.AppsV1Api(kube_client)
    custom = kubernetes.client.CustomObjectsApi(kube_client)

    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name="team"))
    )
    assert core.read_namespace("team").status.phase == "Active"

    deployment = apps.create_namespaced_deployment(
        "team",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
    )
    assert deployment.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment_scale("d", "team", {"spec": {"replicas": 3}})
    assert scaled.spec.replicas == 3
    deployment.spec.replicas = 1
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        apps.replace_namespaced_deployment("d", "team", deployment)
    assert conflict.value.status == 409

    group = yaml.safe_load(EXAMPLE.read_text())
    created = custom.create_namespaced_custom_object(
        "streamherd.io", "v1alpha1", "team", "consumergroups", group
    )
    assert created["metadata"]["generation"] == 1
    custom.patch_namespaced_custom_object_status(
        "streamherd.io",
        "v1alpha1",
        "team",
        "consumergroups",
        group["metadata"]["name"],
        {"status": {"observedGeneration": 1}},
    )
    listed = custom.list_namespaced_custom_object(
        "streamherd.io", "v1alpha1", "team", "consumergroups"
    )
    assert [i["status"] for i in listed["items"]] == [{"observedGeneration": 1}]

    since = core.list_namespaced_config_map("team").metadata.resource_version
    core.create_namespaced_config_map("team", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    watch = kubernetes.watch.Watch()
    events = []
    for event in watch.stream(
        core.list_namespaced_config_map, "team", resource_version=since, timeout_seconds=5
    ):
        events.append((event["type"], event["object"].metadata.name))
        watch.stop()
    assert events == [("ADDED", "cm")]


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_get_and_apply(kubeconfig: Path, kube_api: Any) -> None:
    """Plain kubectl: get (tables and -o json), client-side apply (create, then a patch that
    carries the last-applied annotation), scale and delete."""
    assert "default" in _kubectl(kubeconfig, "get", "namespaces")
    assert "consumergroups.streamherd.io" in _kubectl(kubeconfig, "get", "crds")
    manifest = (
        EXAMPLE.read_text()
        + "\n---\n"
        + yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "fulfilment-worker"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "w"}},
                    "template": {
                        "metadata": {"labels": {"app": "w"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                },
            }
        )
    )
    out = _kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
    assert "consumergroup.streamherd.io/order-fulfilment created" in out
    assert "deployment.apps/fulfilment-worker created" in out
    changed = manifest.replace("targetPerReplica: 500", "targetPerReplica: 100")
    out = _kubectl(kubeconfig, "apply", "-f", "-", stdin=changed)
    assert "consumergroup.streamherd.io/order-fulfilment configured" in out
    assert "deployment.apps/fulfilment-worker unchanged" in out
    group = json.loads(_kubectl(kubeconfig, "get", "xgroup", "order-fulfilment", "-o", "json"))
    assert group["spec"]["autoscaling"]["targetPerReplica"] == 100
    assert group["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in group["metadata"]["annotations"]
    assert "order-fulfilment" in _kubectl(kubeconfig, "get", "consumergroups")
    _kubectl(kubeconfig, "scale", "deployment/fulfilment-worker", "--replicas=4")
    assert kube_api.get("deployments.apps", "default", "fulfilment-worker")["spec"]["replicas"] == 4
    _kubectl(kubeconfig, "delete", "consumergroup", "order-fulfilment")
    assert kube_api.get("consumergroups", "default", "order-fulfilment") is None


def test_kubectl_prints_server_side_columns(kubeconfig: Path, http: KubeHTTP, widgets: str) -> None:
    """kubectl asks for Tables: a CRD's additionalPrinterColumns (JSONPath, priority 1 only
    with -o wide) and the familiar columns of built-ins."""
    http.post(widgets, widget("w1", size=3, colour="red"))
    http.patch(
        f"{widgets}/w1/status",
        {
            "status": {
                "conditions": [
                    {"type": "Synced", "status": "False"},
                    {"type": "Ready", "status": "True"},
                ]
            }
        },
    )
    lines = _kubectl(kubeconfig, "get", "widgets").splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "READY", "AGE"]
    assert lines[1].split()[:3] == ["w1", "3", "True"]
    wide = _kubectl(kubeconfig, "get", "widgets", "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "SIZE", "READY", "COLOUR", "AGE"]
    assert _kubectl(kubeconfig, "get", "deployments").strip() == ""  # "No resources found"
    http.post(
        "/apis/apps/v1/namespaces/default/deployments",
        {
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
            },
        },
    )
    lines = _kubectl(kubeconfig, "get", "deployments").splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:4] == ["d", "0/2", "0", "0"]


def test_table_jsonpath_and_ages() -> None:
    from e2e.cluster import tables

    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "x"}, {"type": "Ready", "status": "y"}],
            "items": [{"n": 1}, {"n": 2}],
        }
    }
    assert tables.jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == "y"
    assert tables.jsonpath(obj, ".status.items[1].n") == 2
    assert tables.jsonpath(obj, ".status.missing") is None
    assert tables.age("2000-01-01T00:00:00Z").endswith("d")
    assert tables.age(None) == "<unknown>"


async def test_plain_aiohttp_client(kube_api: Any) -> None:
    """A bare aiohttp client: JSON lists and a line-delimited JSON watch stream."""
    base = kube_api.url
    async with aiohttp.ClientSession(base) as session:
        async with session.get("/api/v1/namespaces/default/configmaps") as resp:
            assert resp.status == 200
            since = (await resp.json())["metadata"]["resourceVersion"]
        async with session.post(
            "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "c"}}
        ) as resp:
            assert resp.status == 201
        params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "5"}
        async with session.get("/api/v1/namespaces/default/configmaps", params=params) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            line = await resp.content.readline()
        assert json.loads(line)["type"] == "ADDED"


def test_kopf_operator_end_to_end(http: KubeHTTP, kube_api: Any, run_as_operator: Any) -> None:
    """A real kopf operator (a subprocess) discovers a CRD, watches it, adds its finalizer,
    patches status (merge and JSON patch), posts events and completes a deletion."""
    assert (
        http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD).status
        == 201
    )
    operator = run_as_operator(
        [
            "kopf",
            "run",
            "--standalone",
            "--all-namespaces",
            "--verbose",
            str(Path(__file__).with_name("kopf_widgets.py")),
        ]
    )
    operator.wait_for_log(r"Starting the watch-stream for widgets", timeout=30)
    widgets = "/apis/test.streamherd.io/v1/namespaces/default/widgets"
    http.post(widgets, widget("w1", size=1))

    def status() -> dict[str, Any]:
        return http.get(f"{widgets}/w1").body.get("status") or {}

    assert wait_until(lambda: status().get("created"), 20) == {"size": 1}
    body = http.get(f"{widgets}/w1").body
    assert body["metadata"]["finalizers"] == ["test.streamherd.io/finalizer"]

    http.patch(f"{widgets}/w1", {"spec": {"size": 2}})
    assert wait_until(lambda: status().get("resized"), 20) == 2

    http.delete(f"{widgets}/w1")
    wait_until(lambda: http.get(f"{widgets}/w1").status == 404, 20)
    reasons = wait_until(
        lambda: (
            {
                e["reason"]
                for e in kube_api.list("events", "default")
                if e["involvedObject"]["name"] == "w1"
            }
            >= {"Created", "Deleted"}
            and kube_api.list("events", "default")
        ),
        20,
    )
    assert all(e["involvedObject"]["kind"] == "Widget" for e in reasons)
    assert "Traceback" not in operator.logs()
