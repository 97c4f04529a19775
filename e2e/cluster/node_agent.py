"""The simulated kubelet as a node of a real control plane (``e2e.controlplane``).

The real kube-controller-manager runs the Deployments and ReplicaSets; this agent is the rest
of a node, over the API as a real kubelet talks to it:

- registers its Node (as ``system:node:<name>``, so the Node authorizer and the NodeRestriction
  admission plugin judge it), keeps its Lease in ``kube-node-lease`` renewed and its status Ready;
- binds pending pods to itself through ``pods/binding``, as ``system:kube-scheduler`` (the
  scheduler's part: one node, no resources, affinities or taints);
- runs each pod bound to it with the same :class:`~e2e.cluster.kubelet.PodRunner` as the
  emulator's kubelet: one process per container, env with the downward API, Secrets and
  ConfigMaps (read as the node: the Node authorizer only lets it read those its pods use),
  phase/readiness/restarts written to ``pods/status``, graceful deletion honoured (SIGTERM,
  SIGKILL after the grace period, then the pod is deleted with grace 0 on its uid).

Pods are seen through two informers (list, then watch from the list's resourceVersion, with
bookmarks; a 410 or a broken stream re-lists): pods bound here (``spec.nodeName=<node>``) and
unbound ones (``spec.nodeName=``). It runs in its own thread and event loop; ``kill``, ``pid``,
``processes`` and ``logs`` are safe to call from tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp

from e2e.cluster.kubelet import POD_IP, ContainerConfigError, PodRunner

log = logging.getLogger(__name__)
LEASE_SECONDS = 40
RENEW_EVERY = 10.0


def _micro_now() -> str:
    moment = datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")
        self.status, self.body = status, body


class Api:
    """A small JSON client over one aiohttp session (one identity: a client certificate)."""

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        self.url = url.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=20),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None),
        )

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method,
            self.url + path,
            data=data,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            raw = await resp.read()
            parsed = json.loads(raw) if raw else None
            if resp.status not in ok:
                raise ApiFailure(resp.status, parsed)
            return parsed

    async def close(self) -> None:
        await self.session.close()


class Informer:
    """A cache of the objects at ``path`` (a list URL) matching ``params``, kept by a watch."""

    def __init__(
        self, api: Api, path: str, params: Mapping[str, str], changed: asyncio.Event
    ) -> None:
        self.api, self.path, self.params = api, path, dict(params)
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.changed = changed

    @staticmethod
    def key(obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj["metadata"]
        return meta.get("namespace", ""), meta["name"]

    async def run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken stream, a restart of the API server: re-list
                log.debug("informer %s: %s; re-listing", self.path, exc)
                await asyncio.sleep(0.5)

    async def _list_and_watch(self) -> None:
        listed = await self.api.call("GET", f"{self.path}?{urllib.parse.urlencode(self.params)}")
        self.items = {self.key(o): o for o in listed.get("items") or ()}
        version = listed["metadata"]["resourceVersion"]
        self.synced.set()
        self.changed.set()
        while True:
            query = urllib.parse.urlencode(
                {
                    **self.params,
                    "watch": "true",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "300",
                }
            )
            async with self.api.session.get(
                f"{self.api.url}{self.path}?{query}",
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=330),
            ) as resp:
                if resp.status != 200:
                    raise ApiFailure(resp.status, await resp.text())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        raise ApiFailure(obj.get("code", 0), obj)  # 410 Gone: re-list
                    version = obj["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self.items.pop(self.key(obj), None)
                    else:
                        self.items[self.key(obj)] = obj
                    self.changed.set()


class NodeAgent(PodRunner):
    """A node for a real API server at ``url``: ``node_context`` authenticates as
    ``system:node:<node_name>``, ``scheduler_context`` as ``system:kube-scheduler``."""

    def __init__(
        self,
        url: str,
        *,
        node_context: ssl.SSLContext,
        scheduler_context: ssl.SSLContext,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.url = url
        self._contexts = (node_context, scheduler_context)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._bound: set[str] = set()  # pod uids this agent bound (each once)

    # ------------------------------------------------------------------ lifecycle (any thread)

    def start(self, timeout: float = 60.0) -> NodeAgent:
        self._thread = threading.Thread(target=self._thread_main, name="node-agent", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the node agent did not start in time")
        if self._failure is not None:
            raise RuntimeError("the node agent failed to start") from self._failure
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every process (SIGTERM, SIGKILL after ``stop_grace``); pods stay in the API."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover
                raise RuntimeError("the node agent did not stop in time")
        self._thread = None

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self._poked = asyncio.Event()
        self.node_api = Api(self.url, self._contexts[0])
        self.scheduler_api = Api(self.url, self._contexts[1])
        try:
            await self._register()
            node_selector = {"fieldSelector": f"spec.nodeName={self.node_name}"}
            self.bound_pods = Informer(self.node_api, "/api/v1/pods", node_selector, self._poked)
            self.pending_pods = Informer(
                self.scheduler_api,
                "/api/v1/pods",
                {"fieldSelector": "spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed"},
                self._poked,
            )
            background = [
                asyncio.create_task(self.bound_pods.run(), name="node-agent bound pods"),
                asyncio.create_task(self.pending_pods.run(), name="node-agent pending pods"),
                asyncio.create_task(self._heartbeat(), name="node-agent heartbeat"),
            ]
            await asyncio.wait_for(
                asyncio.gather(self.bound_pods.synced.wait(), self.pending_pods.synced.wait()), 30
            )
            main = asyncio.create_task(self._main(), name="node-agent")
            self._ready.set()
            await self._stopping.wait()
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
            await self._stop_pods(self.stop_grace)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        finally:
            await self.node_api.close()
            await self.scheduler_api.close()

    async def _main(self) -> None:
        while True:
            self._poked.clear()
            try:
                await self._schedule()
                await self._sync_pods(list(self.bound_pods.items.values()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("node agent reconciliation failed")
                self.internal_errors.append(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), 1.0)

    # ------------------------------------------------------------------ the Node and its Lease

    def _node_status(self) -> dict[str, Any]:
        now = _now()
        return {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "the streamherd node agent is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": self._ready_since,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": POD_IP},
                {"type": "Hostname", "address": self.node_name},
            ],
            "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "110"},
            "nodeInfo": {
                "kubeletVersion": "streamherd-node-agent",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def _register(self) -> None:
        self._ready_since = _now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                },
            },
        }
        await self.node_api.call("POST", "/api/v1/nodes", node, ok=(201, 409))
        await self._post_node_status()
        self._lease_path = (
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        )
        await self._renew_lease()

    async def _post_node_status(self) -> None:
        await self.node_api.call(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": self._node_status()},
            content_type="application/merge-patch+json",
        )

    async def _renew_lease(self) -> None:
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": _micro_now(),
        }
        try:
            await self.node_api.call(
                "PATCH",
                self._lease_path,
                {"spec": spec},
                content_type="application/merge-patch+json",
            )
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            await self.node_api.call(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                    "spec": spec,
                },
            )

    async def _heartbeat(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                await self._renew_lease()
                beats += 1
                if beats % 6 == 0:  # the status once a minute, the lease every 10 s (as kubelets)
                    await self._post_node_status()
            except Exception as exc:
                log.warning("node heartbeat failed: %s", exc)

    # ------------------------------------------------------------------ scheduling

    async def _schedule(self) -> None:
        for pod in list(self.pending_pods.items.values()):
            meta = pod["metadata"]
            if (
                meta.get("deletionTimestamp")
                or (pod.get("spec") or {}).get("nodeName")
                or meta["uid"] in self._bound
            ):
                continue
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
            }
            try:
                await self.scheduler_api.call(
                    "POST",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                    binding,
                )
            except ApiFailure as exc:
                if exc.status not in (404, 409):  # gone, or bound meanwhile
                    log.warning("cannot bind %s/%s: %s", meta["namespace"], meta["name"], exc)
                    continue
            self._bound.add(meta["uid"])

    # ------------------------------------------------------------------ PodRunner's hooks

    def _current_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bound_pods.items.get((namespace, name))

    async def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.node_api.call(
                "GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}"
            )
        except ApiFailure as exc:
            if exc.status == 404:
                return None
            # 403 until the Node authorizer's graph has the pod -> secret edge: retried.
            raise ContainerConfigError(
                f"cannot read {kind[:-1]} {namespace}/{name}: {exc}"
            ) from exc
        return found

    async def _put_pod_status(self, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.node_api.call(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiFailure as exc:
            if exc.status not in (404, 409):
                raise

    async def _delete_pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.node_api.call(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except ApiFailure as exc:
            if exc.status not in (404, 409):
                raise

    def _api_host_port(self) -> tuple[str, str]:
        parsed = urllib.parse.urlsplit(self.url)
        return parsed.hostname or "127.0.0.1", str(parsed.port or 443)


__all__ = ["NodeAgent"]
