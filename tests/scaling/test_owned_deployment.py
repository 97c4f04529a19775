"""The Deployment a ConsumerGroup's template owns, kept by server-side apply: keys removed from
the template disappear from the Deployment, and an edit of what the template sets (as
`kubectl edit` makes) is reverted; replicas are never reset by it. On both tiers: the real
API server's apply, and the emulator's one-manager model of it (e2e/cluster/patching.py)."""

from __future__ import annotations

from typing import Any

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

pytestmark = pytest.mark.control_plane


def pod_template(h: Harness) -> dict[str, Any]:
    deployment = h.get("Deployment", "crm-consumers") or {}
    return deployment.get("spec", {}).get("template") or {}


# The real API server's apply is what counts; the emulator's model of it runs in make e2e.
@pytest.mark.e2e_variants("emulator")
def test_removed_template_keys_disappear_and_edits_are_reverted(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    container = {
        "name": "enricher",
        "image": "crm:1",
        "command": ["sleep", "3600"],
        "env": [{"name": "WORK_MS", "value": "1"}, {"name": "EXTRA", "value": "x"}],
        "resources": {"limits": {"memory": "64Mi"}},
    }
    template = {
        "metadata": {"labels": {"team": "crm", "tier": "gold"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "containers": [container],
        },
    }
    h.group(
        "crm",
        consumers={"template": template},
        autoscaling={"minReplicas": 2, "maxReplicas": 2, "pollInterval": "500ms"},
    )
    h.start()
    wait_until(lambda: pod_template(h).get("spec", {}).get("tolerations"), 20)
    assert pod_template(h)["metadata"]["labels"]["tier"] == "gold"

    # Keys taken out of the template go from the Deployment (a merge patch left them there).
    # (A merge patch of the ConsumerGroup itself needs nulls to remove its keys.)
    container = {k: v for k, v in container.items() if k != "resources"}
    container["env"] = [{"name": "WORK_MS", "value": "1"}]
    removal = {
        "metadata": {"labels": {"tier": None}},
        "spec": {"tolerations": None, "containers": [container]},
    }
    h.patch("ConsumerGroup", "crm", {"spec": {"consumers": {"template": removal}}})

    def cleaned() -> bool:
        t = pod_template(h)
        c = t["spec"]["containers"][0]
        return (
            "tier" not in t["metadata"]["labels"]
            and not t["spec"].get("tolerations")
            and not (c.get("resources") or {}).get("limits")
            and "EXTRA" not in {e["name"] for e in c["env"]}
        )

    wait_until(
        cleaned, 20, message=lambda: f"removed keys stayed: {pod_template(h)}\n{h.logs()[-6000:]}"
    )

    # `kubectl edit` of what the template sets is reverted; a field it does not set stays.
    h.patch(
        "Deployment",
        "crm-consumers",
        {
            "spec": {
                "template": {
                    "metadata": {"labels": {"team": "edited"}},
                    "spec": {"containers": [{**container, "image": "crm:hacked"}]},
                }
            }
        },
    )
    wait_until(
        lambda: (
            pod_template(h)["spec"]["containers"][0]["image"] == "crm:1"
            and pod_template(h)["metadata"]["labels"]["team"] == "crm"
        ),
        20,
        message=lambda: f"the edit was not reverted: {pod_template(h)}\n{h.logs()[-3000:]}",
    )
    assert (h.get("Deployment", "crm-consumers") or {})["spec"]["replicas"] == 2
    h.wait_event("crm", "DeploymentReverted")
