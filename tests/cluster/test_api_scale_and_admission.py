"""The /scale subresource, admission hooks (422 Invalid), and kmock's fault injection."""

from __future__ import annotations

from typing import Any

import pytest
from e2e.cluster.admission import AdmissionError, FieldError
from e2e.cluster.client import JSON_PATCH, KubeHTTP
from tests.cluster.conftest import widget

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }


def test_deployment_scale_subresource(http: KubeHTTP) -> None:
    """GET /scale shows an autoscaling/v1 Scale (spec.replicas, status.replicas, selector);
    patching it changes the Deployment's spec.replicas (and generation); a stale
    resourceVersion in the Scale is a 409."""
    http.post(DEPLOYMENTS, _deployment("d", 2))
    scale = http.get(f"{DEPLOYMENTS}/d/scale").body
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 0, "selector": "app=d"}
    patched = http.patch(f"{DEPLOYMENTS}/d/scale", {"spec": {"replicas": 5}})
    assert patched.status == 200
    assert patched["spec"]["replicas"] == 5
    deployment = http.get(f"{DEPLOYMENTS}/d").body
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["generation"] == 2
    assert patched["metadata"]["resourceVersion"] == deployment["metadata"]["resourceVersion"]
    stale = http.put(f"{DEPLOYMENTS}/d/scale", {**scale, "spec": {"replicas": 1}})
    assert stale.status == 409
    json_patched = http.patch(
        f"{DEPLOYMENTS}/d/scale",
        [{"op": "replace", "path": "/spec/replicas", "value": 0}],
        JSON_PATCH,
    )
    assert json_patched["spec"]["replicas"] == 0
    negative = http.patch(f"{DEPLOYMENTS}/d/scale", {"spec": {"replicas": -1}})
    assert negative.status == 422


def test_crd_scale_subresource_uses_the_declared_paths(http: KubeHTTP, widgets: str) -> None:
    """A CRD's subresources.scale maps Scale fields to the paths it declares."""
    http.post(widgets, widget("w1", replicas=1))
    http.patch(f"{widgets}/w1/status", {"status": {"replicas": 1, "selector": "app=w1"}})
    scale = http.get(f"{widgets}/w1/scale").body
    assert (scale["spec"], scale["status"]) == (
        {"replicas": 1},
        {"replicas": 1, "selector": "app=w1"},
    )
    http.patch(f"{widgets}/w1/scale", {"spec": {"replicas": 4}})
    assert http.get(f"{widgets}/w1")["spec"]["replicas"] == 4


def test_admission_can_default_and_sees_old_objects(
    http: KubeHTTP, kube_api: Any, widgets: str
) -> None:
    """An admission function returns the object to store (defaulting) and gets the stored
    object on updates (for transition rules); it also runs on /status writes."""
    seen: list[tuple[str, str | None]] = []

    def admit(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        seen.append((new["metadata"]["name"], old and old["metadata"]["resourceVersion"]))
        new["spec"].setdefault("size", 10)
        return new

    kube_api.add_admission("widgets.test.streamherd.io", admit)
    created = http.post(widgets, widget("w1"))
    assert created["spec"] == {"size": 10}
    rv = created["metadata"]["resourceVersion"]
    http.patch(f"{widgets}/w1", {"spec": {"colour": "red"}})
    http.patch(f"{widgets}/w1/status", {"status": {"ok": True}})
    assert seen[0] == ("w1", None)
    assert seen[1] == ("w1", rv)
    assert len(seen) == 3


def test_admission_rejection_is_a_422_invalid_status(
    http: KubeHTTP, kube_api: Any, widgets: str
) -> None:
    """Rejections are 422 Invalid Status objects like the API server's: the message lists
    the field errors, details.causes has one entry per field; nothing is stored."""

    def admit(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        errors = []
        if new["spec"].get("size", 0) < 0:
            errors.append(
                FieldError("spec.size", "must be non-negative", value=new["spec"]["size"])
            )
        if "colour" not in new["spec"]:
            errors.append(FieldError("spec.colour", type="Required"))
        if errors:
            raise AdmissionError(errors)
        return new

    kube_api.add_admission("widgets.test.streamherd.io", admit)
    one = http.post(widgets, widget("w1", size=1))
    assert one.status == 422
    assert one.reason == "Invalid"
    assert (
        one["message"] == 'Widget.test.streamherd.io "w1" is invalid: spec.colour: Required value'
    )
    two = http.post(widgets, widget("w2", size=-1))
    assert two["message"] == (
        'Widget.test.streamherd.io "w2" is invalid: [spec.size: Invalid '
        "value: -1: must be non-negative, spec.colour: Required value]"
    )
    assert two["details"] == {
        "name": "w2",
        "group": "test.streamherd.io",
        "kind": "Widget",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: -1: must be non-negative",
                "field": "spec.size",
            },
            {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.colour"},
        ],
    }
    assert http.get(f"{widgets}/w1").status == 404
    assert http.post(widgets, widget("w3", colour="red")).status == 201
    update = http.patch(f"{widgets}/w3", {"spec": {"size": -5}})
    assert update.status == 422
    assert http.get(f"{widgets}/w3")["spec"] == {"colour": "red"}


def test_admission_accepts_errors_of_other_validators(
    http: KubeHTTP, kube_api: Any, widgets: str
) -> None:
    """Any exception with ``.errors`` (e.g. crd_validation.Invalid) is rendered the same way;
    other exceptions are a 500 (as a failing webhook would be)."""
    from e2e.cluster import crd_validation

    def schema_like(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        raise crd_validation.Invalid(
            [
                crd_validation.FieldError(
                    "spec.mode", "Unsupported value", 'supported values: "A", "B"', "C"
                )
            ]
        )

    kube_api.add_admission("widgets", schema_like)
    reply = http.post(widgets, widget("w1", mode="C"))
    assert reply.status == 422
    assert reply["message"] == (
        'Widget.test.streamherd.io "w1" is invalid: spec.mode: '
        'Unsupported value: "C": supported values: "A", "B"'
    )
    assert reply["details"]["causes"][0]["reason"] == "FieldValueNotSupported"
    kube_api.remove_admission("widgets", schema_like)

    def broken(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        raise RuntimeError("boom")

    kube_api.add_admission("widgets", broken)
    assert http.post(widgets, widget("w2")).status == 500


@pytest.mark.parametrize("status", [500, 503])
def test_kmock_reactions_inject_faults(http: KubeHTTP, kube_api: Any, status: int) -> None:
    """kmock's DSL still works on the emulator: declared reactions win over the emulated API
    (fault injection), and every request is recorded for assertions."""
    http.post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}})
    kube_api["get /api/v1/namespaces/default/configmaps/c"] << status << {"kind": "Status"}
    assert http.get("/api/v1/namespaces/default/configmaps/c").status == status
    assert http.get("/api/v1/namespaces/default/configmaps").status == 200
    assert len(kube_api["post"]) == 1
    assert kube_api["post"][0].data == {"metadata": {"name": "c"}}
    assert kube_api.objects["v1/configmaps", "default", "c"] >= {"metadata": {"name": "c"}}
