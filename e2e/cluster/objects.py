"""The object helpers tests use (get/list/create/patch/delete), for a real cluster.

The emulator's ApiServer has these methods on its store; ``ClusterObjects`` gives the same
five over the official client's DynamicClient, so one test body runs against the local
cluster or, with $STREAMHERD_E2E_KUBECONFIG, a real one. Resources are named as in kubectl:
"consumergroups.streamherd.io", "deployments.apps", "pods".
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError
from kubernetes.dynamic.resource import ResourceList


def _version_order(version: str) -> tuple[int, int, int]:
    """Kubernetes' version priority: GA over beta over alpha, then the higher number."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (0, 0, 0)
    stage = {"alpha": 1, "beta": 2, None: 3}[match[2]]
    return (stage, int(match[1]), int(match[3] or 0))


def apply_crds(kubeconfig: Path, crds: Path) -> None:
    """``kubectl apply`` the CRDs at ``crds`` (a file or folder), then wait until served."""
    from e2e.cluster.processes import VENV_BIN

    kubectl = [os.path.join(VENV_BIN, "kubectl"), "--kubeconfig", str(kubeconfig)]
    for args in (
        ["apply", "-f", str(crds)],
        ["wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds)],
    ):
        done = subprocess.run([*kubectl, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr}")


class ClusterObjects:
    def __init__(self, kubeconfig: Path) -> None:
        self.client = DynamicClient(kubernetes.config.new_client_from_config(str(kubeconfig)))

    def _resource(self, name: str, api_version: str | None = None, kind: str | None = None) -> Any:
        if api_version and kind:
            return self.client.resources.get(api_version=api_version, kind=kind)
        plural, _, group = name.partition(".")
        found = [
            r
            for r in self.client.resources.search(name=plural, group=group)
            if r.group == group and not isinstance(r, ResourceList)
        ]
        if not found:
            raise ResourceNotFoundError(f"no resource {name!r} is served")
        # Several versions (events: core v1 and events.k8s.io; HPAs: v1 and v2): the newest.
        return max(found, key=lambda r: _version_order(r.api_version))

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self._resource(resource).get(name=name, namespace=namespace).to_dict()  # type: ignore[no-any-return]
        except NotFoundError:
            return None

    def list(
        self, resource: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        found = self._resource(resource).get(namespace=namespace, label_selector=label_selector)
        return [item.to_dict() for item in found.items]

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        api = self._resource("", obj["apiVersion"], obj["kind"])
        namespace = namespace or obj.get("metadata", {}).get("namespace")
        return api.create(body=obj, namespace=namespace).to_dict()  # type: ignore[no-any-return]

    def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        api = self._resource(resource)
        if subresource is not None:  # e.g. "status": another writer of a status, in tests
            api = api.subresources[subresource]
        done = api.patch(
            body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json"
        )
        return done.to_dict()  # type: ignore[no-any-return]

    def delete(
        self, resource: str, namespace: str | None, name: str, **options: Any
    ) -> dict[str, Any]:
        return (
            self._resource(resource)
            .delete(name=name, namespace=namespace, body=options or None)
            .to_dict()
        )  # type: ignore[no-any-return]

    def create_namespace(self, name: str) -> None:
        """A namespace, once its "default" ServiceAccount exists (pods are refused before)."""
        from e2e.cluster.processes import wait_until

        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        wait_until(
            lambda: self.get("serviceaccounts", name, "default") is not None,
            60,
            message=f"no default ServiceAccount in namespace {name}",
        )

    def release_namespace(self, name: str) -> None:
        """Delete a test's namespace without waiting, first dropping the finalizers of our
        resources there (the operator that would remove them has stopped)."""
        for plural in ("redisstreams", "consumergroups", "retentionpolicies"):
            resource = f"{plural}.streamherd.io"
            for item in self.list(resource, name):
                if item["metadata"].get("finalizers"):
                    self.patch(
                        resource, name, item["metadata"]["name"], {"metadata": {"finalizers": None}}
                    )
        self.delete("namespaces", None, name)
