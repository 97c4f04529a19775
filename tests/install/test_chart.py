"""The Helm chart (helm/streamherd) rendered offline through Helm's own SDK (helm-python-sdk):
lint, the values schema, both RBAC modes, every optional object, the Kubernetes schemas of
every version we support, the restricted Pod Security profile, and the files it must keep in
step with the repository (CRDs, dashboards, install.yaml, appVersion)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from e2e import chart
from e2e.controlplane import rbac

from streamherd import __version__
from streamherd.kube.manifests import desired_cron_job

KUBERNETES_VERSIONS = [f"1.{minor}.0" for minor in range(25, 38)]  # Chart.yaml: >=1.25
EVERYTHING_ON = {
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
    },
}
WATCHED = {"watchNamespaces": ["team-a", "team-b"]}


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ------------------------------------------------------------------ in step with the repository


def test_app_version_is_the_package_version() -> None:
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == __version__
    assert chart.chart().metadata["appVersion"] == __version__


def test_the_chart_copies_are_fresh() -> None:
    stale = [str(p.relative_to(chart.REPO_ROOT)) for p in chart.stale_copies()]
    assert not stale, f"stale copies in the chart: {stale}: run `make chart` and commit them"
    crds = {p.name for p in (chart.CHART / "files" / "crds").iterdir()}
    assert crds == {p.name for p in (chart.REPO_ROOT / "crds").iterdir()}


def test_the_rendered_crds_are_the_repositorys_with_the_keep_policy() -> None:
    rendered = {
        o["metadata"]["name"]: o for o in chart.render() if o["kind"] == "CustomResourceDefinition"
    }
    for path in sorted((chart.REPO_ROOT / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text())
        crd = rendered.pop(source["metadata"]["name"])
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        del crd["metadata"]["annotations"], crd["metadata"]["labels"]
        assert crd == source
    assert not rendered
    assert not [
        o
        for o in chart.render({"crds": {"enabled": False}})
        if o["kind"] == "CustomResourceDefinition"
    ]
    unkept = chart.render({"crds": {"keep": False}})
    assert all(
        "annotations" not in o["metadata"]
        for o in unkept
        if o["kind"] == "CustomResourceDefinition"
    )


def test_install_manifest_is_fresh() -> None:
    assert chart.INSTALL_MANIFEST.read_text() == chart.install_manifest(), (
        "manifests/install.yaml is stale: run `make chart` and commit it"
    )
    documents = [d for d in yaml.safe_load_all(chart.INSTALL_MANIFEST.read_text()) if d]
    namespace = documents[0]
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "streamherd")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert documents[1:] == chart.render()


def test_the_prometheus_rule_and_dashboard_are_the_repositorys() -> None:
    objects = chart.render(EVERYTHING_ON)
    alerts = yaml.safe_load((chart.REPO_ROOT / "dashboards" / "alerts.yaml").read_text())
    assert one(objects, "PrometheusRule")["spec"]["groups"] == alerts["groups"]
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["streamherd.json"]) == json.loads(
        (chart.REPO_ROOT / "dashboards" / "streamherd.json").read_text()
    )


# ------------------------------------------------------------------ lint and the values schema


def test_lint_is_clean() -> None:
    for values in ({}, WATCHED, EVERYTHING_ON):
        report = helm_python.lint(chart.CHART, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


def schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key in ("properties",):
            for name, child in (node.get(key) or {}).items():
                yield from schema_nodes(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from schema_nodes(node[key], f"{path}[]")


# Kubernetes' own types, passed through to the pod spec unchanged: the API server validates
# them (and kubernetes-validate's strict schemas below, which refuse unknown fields).
KUBERNETES_TYPED = {
    ".affinity",
    ".tolerations[]",
    ".topologySpreadConstraints[]",
    ".extraEnv[]",
    ".networkPolicy.metricsFrom[]",
    ".networkPolicy.egress[]",
}


def test_the_values_schema_rejects_unknown_keys_throughout() -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    open_objects = [
        path
        for path, node in schema_nodes(schema)
        if node.get("additionalProperties") is not False
        and not isinstance(node.get("additionalProperties"), dict)  # a map of typed values
        and path not in KUBERNETES_TYPED
    ]
    assert not open_objects
    # every value the chart defines is in the schema (and so nothing is a typo of one)
    chart.chart().validate_schema(yaml.safe_load((chart.CHART / "values.yaml").read_text()))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 1}, "at '': additional properties 'replicas' not allowed"),
        ({"image": {"repo": "x"}}, "at '/image': additional properties 'repo' not allowed"),
        (
            {"podSecurityContext": {"runAsNonroot": True}},
            "at '/podSecurityContext': additional properties 'runAsNonroot' not allowed",
        ),
        (  # without leader election, two replicas would both be active
            {"replicaCount": 2, "leaderElection": {"enabled": False}},
            "at '/replicaCount': maximum: got 2, want 1",
        ),
        ({"leaderElection": {"lease": 5}}, "additional properties 'lease' not allowed"),
        ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
        ({"metrics": {"port": "8080"}}, "at '/metrics/port': got string, want integer"),
        ({"logLevel": "verbose"}, "at '/logLevel'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    ],
)
def test_values_breaking_the_schema_are_rejected_with_helms_message(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as failure:
        chart.render(values)
    assert "values don't meet the specifications of the schema(s)" in str(failure.value)
    assert message in str(failure.value)


# ------------------------------------------------------------------ what it renders


def test_defaults_render_the_operator_in_all_namespaces() -> None:
    objects = chart.render()
    assert kinds(objects) == sorted(
        ["CustomResourceDefinition"] * 3
        + ["ServiceAccount"] * 2  # the operator's, the janitor's
        + ["ClusterRole"] * 2  # the operator's, the janitor's
        + ["ClusterRoleBinding", "RoleBinding", "Service", "Deployment"]
        + ["Role", "RoleBinding"]  # leader election's Lease, in the release's namespace
    )
    role = one(objects, "ClusterRole", "streamherd")
    assert role["rules"] == rbac.CLUSTER_RULES + rbac.OPERATOR_RULES
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "streamherd", "namespace": "streamherd"}
    ]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Leader election on: the new pod stands by until the old one released the Lease.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    leader = one(objects, "Role", "streamherd-leader")
    assert leader["metadata"]["namespace"] == "streamherd"
    assert leader["rules"] == rbac.LEADER_RULES
    container = operator_container(objects)
    assert env(container)["STREAMHERD_LEADER_ELECTION"] == "true"
    assert env(container)["STREAMHERD_LEADER_ELECTION_ID"] == "streamherd"
    assert "STREAMHERD_NAMESPACES" not in env(container)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert env(container)["STREAMHERD_HEALTH_PORT"] == "8081"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # The janitor's account in the release's namespace, bound to the janitor's rules only.
    janitor = one(objects, "ClusterRole", "streamherd-janitor")
    assert janitor["rules"] == rbac.JANITOR_RULES
    assert (
        one(objects, "RoleBinding", "streamherd-janitor")["metadata"]["namespace"] == "streamherd"
    )
    assert env(container)["STREAMHERD_JANITOR_SERVICE_ACCOUNT"] == "streamherd-janitor"
    notes = chart.render_files()["streamherd/templates/NOTES.txt"]
    assert "It watches all namespaces." in notes and "keeps the CRDs" in notes


def test_watched_namespaces_get_roles_and_kopf_keeps_its_cluster_reads() -> None:
    objects = chart.render(WATCHED)
    roles = [
        o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] != "streamherd-leader"
    ]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == rbac.OPERATOR_RULES for r in roles)
    bindings = {
        (o["metadata"]["namespace"], o["roleRef"]["kind"], o["roleRef"]["name"])
        for o in objects
        if o["kind"] == "RoleBinding"
    }
    assert bindings == {
        (ns, kind, name)
        for ns in ("team-a", "team-b")
        for kind, name in (("Role", "streamherd"), ("ClusterRole", "streamherd-janitor"))
    } | {("streamherd", "Role", "streamherd-leader")}
    cluster_role = one(objects, "ClusterRole", "streamherd")
    assert cluster_role["rules"] == rbac.CLUSTER_RULES + rbac.NAMESPACES_RULES
    janitors = [
        o
        for o in objects
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "streamherd-janitor"
    ]
    assert sorted(j["metadata"]["namespace"] for j in janitors) == ["team-a", "team-b"]
    assert env(operator_container(objects))["STREAMHERD_NAMESPACES"] == "team-a,team-b"
    assert (
        "the namespaces team-a, team-b"
        in chart.render_files(WATCHED)["streamherd/templates/NOTES.txt"]
    )


def test_the_rules_have_one_source() -> None:
    """The chart and the control-plane tier's RBAC read files/rbac.yaml; nothing else lists them."""
    source = yaml.safe_load((chart.CHART / "files" / "rbac.yaml").read_text())
    assert (
        source["operator"],
        source["cluster"],
        source["janitor"],
        source["leader"],
        source["namespaces"],
    ) == (
        rbac.OPERATOR_RULES,
        rbac.CLUSTER_RULES,
        rbac.JANITOR_RULES,
        rbac.LEADER_RULES,
        rbac.NAMESPACES_RULES,
    )


def test_every_optional_object_off_by_default_and_on_when_asked() -> None:
    optional = {
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert not optional & set(kinds(chart.render()))
    for values in (EVERYTHING_ON, {**EVERYTHING_ON, **WATCHED}):
        objects = chart.render(values)
        assert optional <= set(kinds(objects))
    objects = chart.render(EVERYTHING_ON)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert one(objects, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": selector},
    }
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    with pytest.raises(helm_python.HelmRenderError, match=r"needs metrics\.service\.enabled"):
        chart.render(
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
        )


def test_image_and_tag_come_from_values() -> None:
    default = operator_container(chart.render())
    assert default["image"] == f"ghcr.io/streamherd/streamherd:{__version__}"
    container = operator_container(
        chart.render(
            {
                "image": {
                    "repository": "registry.example/team/streamherd",
                    "tag": "1.2.3",
                    "pullPolicy": "Always",
                }
            }
        )
    )
    assert container["image"] == "registry.example/team/streamherd:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    # The janitor's CronJobs run the operator's own image.
    assert env(container)["STREAMHERD_IMAGE"] == container["image"]
    digest = "sha256:" + "ab" * 32
    pinned = operator_container(chart.render({"image": {"digest": digest}}))
    assert pinned["image"] == f"ghcr.io/streamherd/streamherd@{digest}"


# ------------------------------------------------------------------ Kubernetes schemas, Pod Security


def every_rendering() -> list[dict[str, Any]]:
    return [
        *chart.render(EVERYTHING_ON),
        *[
            o
            for o in chart.render({**EVERYTHING_ON, **WATCHED})
            if o["kind"] in ("Role", "RoleBinding")
        ],
    ]


PROMETHEUS_OPERATOR = {"ServiceMonitor", "PrometheusRule"}  # not Kubernetes' schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(version: str) -> None:
    for obj in every_rendering():
        if obj["kind"] in PROMETHEUS_OPERATOR:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{obj['kind']} {obj['metadata']['name']} on {version}: {exc.message} at {list(exc.path)}"
            )


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the restricted Pod Security Standard (v1.25+) refuses in a pod spec."""
    problems = []
    pod = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(field)
    if any("hostPath" in v for v in pod_spec.get("volumes") or ()):
        problems.append("hostPath volume")
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        ctx = container.get("securityContext") or {}
        name = container["name"]
        if ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot")
        if ctx.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            problems.append(f"{name}: capabilities.drop ALL")
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities.add")
        if any(p.get("hostPort") for p in container.get("ports") or ()):
            problems.append(f"{name}: hostPort")
    return problems


def test_the_operator_meets_the_restricted_pod_security_profile() -> None:
    pod_spec = one(chart.render(), "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod_spec) == []
    (container,) = pod_spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec["securityContext"]["runAsUser"] == 65532  # the image's USER
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # the check itself catches what the profile refuses
    assert restricted_violations({"containers": [{"name": "c"}], "hostNetwork": True}) == [
        "hostNetwork",
        "c: runAsNonRoot",
        "c: seccompProfile",
        "c: allowPrivilegeEscalation",
        "c: capabilities.drop ALL",
    ]


def test_the_janitor_cron_job_the_operator_creates_meets_it_too() -> None:
    owner = {
        "apiVersion": "streamherd.io/v1alpha1",
        "kind": "ConsumerGroup",
        "metadata": {"name": "g", "namespace": "team-a", "uid": "u"},
    }
    cron = desired_cron_job(
        owner,
        schedule="*/1 * * * *",
        image="i",
        service_account="streamherd-janitor",
        active_deadline_seconds=60,
    )
    pod_spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert restricted_violations(pod_spec) == []
    (container,) = pod_spec["containers"]
    # read-only root: the client certificate for mutual TLS needs a writable /tmp
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or ()}
    assert "/tmp" in mounts, "the janitor's pod has no writable /tmp"
    assert "emptyDir" in {v["name"]: v for v in pod_spec.get("volumes") or ()}[mounts["/tmp"]]
    for version in (KUBERNETES_VERSIONS[0], KUBERNETES_VERSIONS[-1]):
        kubernetes_validate.validate(cron, version, strict=True)
