"""Issue 13, finding 7: the Deployment index (controller/deployments) watches only the
namespaces its groups use, with our own client's watch (from the LIST's resourceVersion, a
410 lists again), on the emulator. The periodic re-list is set to an hour here, so what the
index learns, it learns from its watch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2e.cluster.local import LocalCluster
from tests.budget.test_write_budget import worker

from streamherd.controller.deployments import DeploymentIndex
from streamherd.kube import Credentials, KubeClient

HOUR = 3600.0


class Recording(DeploymentIndex):
    """Every watch event the index is handed, by namespace."""

    def __init__(self, kube: KubeClient) -> None:
        super().__init__(kube, relist_every=HOUR)
        self.namespaces: list[str] = []

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.namespaces.append(str((body.get("metadata") or {}).get("namespace")))
        super().observe(event_type, body)


async def until(check: Any, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def test_only_the_namespaces_groups_use_are_watched_and_kept_fresh(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    api = local_cluster.api
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}})
    api.create(worker("web", "default"))
    api.create(worker("other", "elsewhere"))
    kube = KubeClient(Credentials(kubeconfig=local_cluster.write_kubeconfig(tmp_path / "kc")))
    index = Recording(kube)
    try:
        state = await index.lookup("group-a", "default", "web")
        assert state is not None and index.known("default")
        assert index.get(("elsewhere", "other")) is None
        # Changes everywhere: only the watched namespace's reach the index.
        api.patch("deployments.apps", "elsewhere", "other", {"spec": {"replicas": 4}})
        api.create(worker("more", "elsewhere"))
        api.create(worker("unreferenced", "default"))
        api.patch("deployments.apps", "default", "web", {"spec": {"replicas": 3}})
        await until(lambda: (index.get(("default", "web")) or {}).get("replicas") == 3)
        assert set(index.namespaces) == {"default"}, index.namespaces
        assert index.get(("default", "unreferenced")) is None, "stored though no group uses it"
        # A group in another namespace: listed and watched from then on, then let go.
        await index.lookup("group-b", "elsewhere", "other")
        api.patch("deployments.apps", "elsewhere", "other", {"spec": {"replicas": 5}})
        await until(lambda: (index.get(("elsewhere", "other")) or {}).get("replicas") == 5)
        index.release("group-b")
        await asyncio.sleep(0.1)
        seen = len(index.namespaces)
        api.patch("deployments.apps", "elsewhere", "other", {"spec": {"replicas": 6}})
        api.patch("deployments.apps", "default", "web", {"spec": {"replicas": 2}})
        await until(lambda: (index.get(("default", "web")) or {}).get("replicas") == 2)
        assert set(index.namespaces[seen:]) == {"default"}, "still watching a released namespace"
    finally:
        await index.close()
        await kube.close()


async def test_a_watch_broken_while_a_deployment_is_deleted_heals(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The deletion leaves no DELETED event (the history is compacted while the watch is
    down): the resumed watch gets 410, lists again, and the entry goes, long before the
    hourly re-list."""
    api = local_cluster.api
    api.create(worker("web", "default"))
    kube = KubeClient(Credentials(kubeconfig=local_cluster.write_kubeconfig(tmp_path / "kc")))
    index = Recording(kube)
    try:
        assert await index.lookup("group-a", "default", "web") is not None
        api.patch("deployments.apps", "default", "web", {"spec": {"replicas": 2}})
        await until(lambda: (index.get(("default", "web")) or {}).get("replicas") == 2)

        def delete_unseen() -> None:  # in the API server's loop: no watch sends in between
            api.delete("deployments.apps", "default", "web")
            api.compact()

        api.break_watches("deployments.apps", during=delete_unseen)
        await until(lambda: index.get(("default", "web")) is None)
        # And it goes on watching from the new list.
        api.create(worker("web", "default"))
        await until(lambda: index.get(("default", "web")) is not None)
    finally:
        await index.close()
        await kube.close()
