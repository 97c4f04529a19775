"""The one place that sends requests to the Kubernetes API (aiohttp, async).

Credentials come from kopf's login (``kopf.ConnectionInfo``), so the operator's own calls
and kopf's watches authenticate the same way, in-cluster or from a kubeconfig.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from streamherd.kube import requests as rq


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo, *, timeout: float = 30.0) -> None:
        self.info = info
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self.on_request: Callable[[rq.Request], None] | None = None
        """Told of every request sent (the operator counts them as a metric)."""

    @classmethod
    def from_environment(cls) -> KubeClient:
        """In a pod: the service account; elsewhere: $KUBECONFIG / ~/.kube/config."""
        settings = kopf.OperatorSettings()
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
        if info is None:
            raise RuntimeError("no Kubernetes credentials: not in a pod and no kubeconfig found")
        return cls(info)

    async def _get_session(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                info = self.info
                # kopf's own helpers: the same headers and TLS as kopf's watches use.
                tls = info.as_ssl_context() if info.server.startswith("https") else False
                self._session = aiohttp.ClientSession(
                    base_url=info.server.rstrip("/") + "/",
                    headers=info.as_http_headers(),
                    connector=aiohttp.TCPConnector(ssl=tls, limit=32),
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                )
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: rq.Request) -> Any:
        session = await self._get_session()
        if self.on_request is not None:
            self.on_request(request)
        headers = {"Content-Type": request.content_type} if request.body is not None else {}
        async with session.request(
            request.method,
            request.path.lstrip("/"),
            params=request.params or None,
            data=request.payload(),
            headers=headers,
        ) as response:
            raw = await response.read()
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                if response.status < 400:
                    raise
                # Not every error is a Status: kube-apiserver answers a path under an API
                # group it does not serve (KEDA's, not installed) with "404 page not found".
                data = raw.decode(errors="replace").strip()
            if response.status >= 400:
                reason = (
                    (data or {}).get("reason", response.reason or "")
                    if isinstance(data, dict)
                    else response.reason or ""
                )
                message = (
                    (data or {}).get("message", "") if isinstance(data, dict) else str(data or "")
                )
                error = {404: NotFound, 409: Conflict}.get(response.status, KubeError)
                raise error(response.status, reason, message)
            return data

    # Convenience wrappers: each one request.

    async def get(self, resource: rq.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.send(rq.get(resource, namespace, name))
        except NotFound:
            return None
        return result

    async def list(
        self, resource: rq.Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        result = await self.send(rq.list_(resource, namespace, label_selector))
        return list(result.get("items", []))

    async def list_if_served(
        self, resource: rq.Resource, namespace: str
    ) -> builtins.list[dict[str, Any]]:
        """list(), but a resource the cluster does not serve (KEDA not installed) is empty."""
        try:
            return await self.list(resource, namespace)
        except NotFound:
            return []

    async def create(
        self, resource: rq.Resource, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.send(rq.create(resource, namespace, body))
        return result

    async def merge_patch(
        self, resource: rq.Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.send(rq.merge_patch(resource, namespace, name, patch))
        return result

    async def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        await self.send(rq.patch_scale(namespace, deployment, replicas))

    async def patch_status(
        self, resource: rq.Resource, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self.send(rq.patch_status(resource, namespace, name, status))

    async def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str
    ) -> None:
        await self.send(rq.event(involved, type_=type_, reason=reason, message=message))
