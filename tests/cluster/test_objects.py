"""ClusterObjects (the real-cluster twin of the emulator's store helpers) through a real
client: what the operator tests use when $STREAMHERD_E2E_KUBECONFIG points at a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.cluster.objects import ClusterObjects


def test_the_same_five_helpers_over_the_official_client(kubeconfig: Path, kube_api: Any) -> None:
    objects = ClusterObjects(kubeconfig)
    created = objects.create(
        {
            "apiVersion": "streamherd.io/v1alpha1",
            "kind": "ConsumerGroup",
            "metadata": {"name": "brain", "namespace": "default"},
            "spec": {"streamRef": {"name": "calls"}},
        }
    )
    assert (
        created["metadata"]["uid"]
        == kube_api.get("consumergroups.streamherd.io", "default", "brain")["metadata"]["uid"]
    )
    got = objects.get("consumergroups.streamherd.io", "default", "brain")
    assert got is not None and got["spec"]["startId"] == "$", "defaulted by the schema"
    objects.patch(
        "consumergroups.streamherd.io",
        "default",
        "brain",
        {"metadata": {"annotations": {"streamherd.io/paused": "true"}}},
    )
    assert (
        kube_api.get("consumergroups.streamherd.io", "default", "brain")["metadata"]["annotations"][
            "streamherd.io/paused"
        ]
        == "true"
    )
    assert [
        o["metadata"]["name"] for o in objects.list("consumergroups.streamherd.io", "default")
    ] == ["brain"]
    objects.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "stringData": {"k": "v"},
        }
    )
    assert objects.get("secrets", "default", "s") is not None
    objects.delete("consumergroups.streamherd.io", "default", "brain")
    assert objects.get("consumergroups.streamherd.io", "default", "brain") is None
