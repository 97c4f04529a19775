"""The emulator enforces our CRDs' schemas like kube-apiserver: bad input is rejected at apply
time with the API server's message, defaults are filled in, unknown fields pruned."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e.cluster import crd_validation
from e2e.cluster.processes import VENV_BIN

GROUP = """
apiVersion: streamherd.io/v1alpha1
kind: ConsumerGroup
metadata: {name: brain, namespace: default}
spec:
  streamRef: {name: conversations}
  autoscaling: {minReplicas: %d, maxReplicas: 3}
  unknownField: 1
"""


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{VENV_BIN}/kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_kubectl_apply_of_a_bad_resource_is_rejected_with_the_rule_message(
    kubeconfig: Path, kube_api: Any
) -> None:
    done = kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=GROUP % 5)
    assert done.returncode != 0
    assert (
        'The ConsumerGroup "brain" is invalid: spec.autoscaling: Invalid value: '
        "minReplicas must not exceed maxReplicas" in done.stderr
    )
    assert kube_api.get("consumergroups.streamherd.io", "default", "brain") is None


def test_a_good_resource_is_stored_defaulted_and_pruned(kubeconfig: Path, kube_api: Any) -> None:
    done = kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=GROUP % 1)
    assert done.returncode == 0, done.stderr
    stored = kube_api.get("consumergroups.streamherd.io", "default", "brain")
    assert "unknownField" not in stored["spec"]
    assert stored["spec"]["autoscaling"]["pollInterval"] == "2s"
    assert stored["spec"]["recovery"]["strategy"] == "Requeue"


def test_changing_the_group_name_is_refused(kubeconfig: Path, kube_api: Any) -> None:
    assert (
        kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=GROUP % 1).returncode == 0
    )
    renamed = GROUP % 1 + "  groupName: other\n"
    done = kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=renamed)
    assert done.returncode != 0
    assert "groupName is immutable" in done.stderr


RULED = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {"low": {"type": "integer"}, "high": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.low <= self.high", "message": "low>high"}],
        },
        "status": {"type": "object", "properties": {"n": {"type": "integer"}}},
    },
}


def test_an_unchanged_value_is_not_held_to_a_rule_it_was_stored_without() -> None:
    """Ratcheting, as kube-apiserver since 1.30: an object stored before a rule existed (its
    spec breaks it) still gets its status written; a change of the spec must obey the rule.
    Without it every status write re-ran every CEL rule of the spec (most of the emulator's
    CPU with 2,000 ConsumerGroups; bench-load)."""
    old = {"spec": {"low": 5, "high": 3}, "status": {"n": 1}}
    status_written = crd_validation.admit(RULED, {**old, "status": {"n": 2}}, old)
    assert status_written["status"] == {"n": 2}
    with pytest.raises(crd_validation.Invalid, match="low>high"):
        crd_validation.admit(RULED, {**old, "spec": {"low": 6, "high": 3}}, old)
    with pytest.raises(crd_validation.Invalid, match="low>high"):
        crd_validation.admit(RULED, old)  # a create has no old value to ratchet to
