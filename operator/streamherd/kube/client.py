"""The one place that sends requests to the Kubernetes API (aiohttp, async).

- **Credentials** (``kube.auth``): the same source as kopf's watches; renewed on 401.
- **Retries**: 429 (API Priority and Fairness), 500/502/503/504, timeouts and refused
  connections are retried with jittered exponential backoff (full jitter, 0.25 s doubling to
  8 s), honouring ``Retry-After``, for up to ``retry_for`` seconds (30 by default); then
  :class:`Unavailable`. Other errors are raised at once, typed (``kube.errors``), naming the
  request as RBAC sees it.
- **Budget** (``kube.budget``): every write takes a token of the write bucket, by
  :class:`Priority` (scale actions, then status conditions/replicas, then Events, then
  status numbers), every read of the read bucket; a deferrable write is never queued
  (:class:`WriteDeferred`).
- **Queue** (``kube.queue``): status writes and Events are handed to ``queue`` (one
  coalescing slot per object) rather than awaited, so no loop waits behind other objects.
- **Events** (``kube.events``): aggregated per object and reason.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from streamherd.kube import requests as rq
from streamherd.kube.auth import Credentials
from streamherd.kube.budget import Limits, Priority
from streamherd.kube.errors import (
    KubeError,
    NotFound,
    Unavailable,
    WriteDeferred,
    error_for,
)
from streamherd.kube.events import EventRecorder
from streamherd.kube.queue import WriteQueue

logger = logging.getLogger(__name__)


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 30.0
TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def backoff(attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Full jitter: a random wait in [0, min(cap, base * 2**attempt)] (AWS's recipe)."""
    return rng(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the API server sends seconds


class _Retryable(Exception):
    def __init__(self, error: KubeError, wait: float | None) -> None:
        super().__init__(str(error))
        self.error, self.wait = error, wait


class KubeClient:
    def __init__(
        self,
        credentials: Credentials | None = None,
        limits: Limits | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 30.0,
    ) -> None:
        self.credentials = credentials or Credentials()
        self.limits = limits or Limits()
        self._writes, self._reads = self.limits.buckets()
        self._timeout = timeout
        self.retry_for = retry_for
        self._session: aiohttp.ClientSession | None = None
        self._session_generation = -1
        self.sessions_made = 0
        """Sessions built so far: one, plus one per kopf re-login (tests, debugging)."""
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.events = EventRecorder(self)
        self.queue = WriteQueue()
        """Writes the loops hand off (status, Events): see ``kube.queue``."""
        self.on_request: Callable[[rq.Request], None] | None = None
        """Told of every request sent (the operator counts them as a metric)."""
        self.on_retry: Callable[[rq.Request, str], None] | None = None
        """Told of every retry and why ("429", "503", "timeout")."""
        self.on_throttle: Callable[[rq.Request, float], None] | None = None
        """Told how long a write waited for the write budget."""

    @classmethod
    def from_environment(cls, limits: Limits | None = None) -> KubeClient:
        """In a pod: the service account; elsewhere: $KUBECONFIG / ~/.kube/config."""
        return cls(Credentials(), limits)

    async def _get_session(self) -> aiohttp.ClientSession:
        """Our session; a new one after the credentials were reloaded (kopf's re-login)."""
        async with self._lock:
            await self.credentials.ensure()
            stale = self._session_generation != self.credentials.generation
            if self._session is None or self._session.closed or stale:
                if self._session is not None and not self._session.closed:
                    self._retire(self._session)
                self._session = await self.credentials.session(
                    timeout=aiohttp.ClientTimeout(total=self._timeout)
                )
                self._session_generation = self.credentials.generation
                self.sessions_made += 1
            return self._session

    def _retire(self, session: aiohttp.ClientSession) -> None:
        """Close a replaced session once the requests still using it are done (at most
        the request timeout later)."""

        async def later() -> None:
            try:
                await asyncio.sleep(self._timeout)
            finally:
                await session.close()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def drain(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the queued writes to be sent: whether they were. A
        one-shot command (`streamherd janitor`, `streamherd dlq`) must not exit with its
        status counters and Events still queued (``close`` drops what is pending)."""
        try:
            async with asyncio.timeout(seconds):
                await self.queue.drained()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.queue.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def write_room(self) -> float:
        """Write tokens there are now (for a writer deciding whether to send numbers)."""
        return self._writes.tokens

    def writes_waiting(self) -> int:
        """Writes waiting for a token now."""
        return self._writes.waiting

    async def _take(self, request: rq.Request, deferrable: bool, priority: Priority) -> None:
        if not request.write:
            await self._reads.take()
            return
        if deferrable:
            if not self._writes.try_take(keep=self.limits.reserve):
                raise WriteDeferred(request)
            return
        waited = await self._writes.take(priority)
        if waited > 0.01 and self.on_throttle is not None:
            self.on_throttle(request, waited)

    async def send(
        self,
        request: rq.Request,
        *,
        deferrable: bool = False,
        retry_for: float | None = None,
        priority: Priority = Priority.STATUS,
    ) -> Any:
        """Send ``request``; its reply as JSON (or None). Raises a typed KubeError. A write
        waits for its token by ``priority`` (retries do not take another)."""
        await self._take(request, deferrable, priority)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.retry_for if retry_for is None else retry_for)
        attempt = 0
        while True:
            try:
                return await self._send_once(request)
            except _Retryable as retry:
                wait = retry.wait if retry.wait is not None else backoff(attempt)
                attempt += 1
                if loop.time() + wait > deadline:
                    raise Unavailable(
                        retry.error.status,
                        retry.error.reason,
                        f"{retry.error.message} (gave up after {attempt} attempts)",
                        request,
                    ) from retry.error
                if self.on_retry is not None:
                    self.on_retry(request, retry.error.reason)
                logger.debug("retrying %s in %.2fs: %s", request.describe(), wait, retry.error)
                await asyncio.sleep(wait)

    async def _send_once(self, request: rq.Request) -> Any:
        session = await self._get_session()
        if self.on_request is not None:
            self.on_request(request)
        headers = {"Content-Type": request.content_type} if request.body is not None else {}
        url = self.credentials.server + request.path
        try:
            async with session.request(
                request.method,
                url,
                params=request.params or None,
                data=request.payload(),
                headers=headers,
            ) as response:
                raw = await response.read()
                status, response_headers = response.status, response.headers
                response_reason = response.reason or ""
        except TRANSIENT as exc:
            reason = "Timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise _Retryable(KubeError(0, reason, str(exc) or reason, request), None) from exc
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            if status < 400:
                raise
            # Not every error is a Status: kube-apiserver answers a path under an API group it
            # does not serve (KEDA's, not installed) with "404 page not found", and APF's 429
            # with "Too many requests, please try again later.".
            data = raw.decode(errors="replace").strip()
        if status < 400:
            return data
        reason = data.get("reason", response_reason) if isinstance(data, dict) else response_reason
        message = data.get("message", "") if isinstance(data, dict) else str(data or "")
        error = error_for(status, reason or str(status), message, request)
        if status in RETRY_STATUSES:
            raise _Retryable(error, retry_after(response_headers))
        raise error

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

    async def list_versioned(
        self, resource: rq.Resource, namespace: str
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """list(), and the list's resourceVersion (where a watch of it starts)."""
        result = await self.send(rq.list_(resource, namespace))
        version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        return list(result.get("items", [])), version

    async def watch(
        self,
        resource: rq.Resource,
        namespace: str,
        resource_version: str,
        *,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """One watch request: (type, object) as the server sends them (ADDED, MODIFIED,
        DELETED, BOOKMARK) until it ends the watch (``timeout_seconds``). A resourceVersion
        too old raises Gone (list again); a broken connection raises Unavailable (resume
        from the last resourceVersion seen). Takes a read token; not retried here (the
        caller resumes)."""
        request = rq.watch(resource, namespace, resource_version, timeout_seconds)
        await self._take(request, False, Priority.STATUS)
        session = await self._get_session()
        if self.on_request is not None:
            self.on_request(request)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout, sock_read=timeout_seconds + 30
        )
        try:
            async with session.get(
                self.credentials.server + request.path, params=request.params, timeout=timeout
            ) as response:
                if response.status >= 400:
                    raw = await response.text()
                    try:
                        data = json.loads(raw)
                    except ValueError:
                        data = {"message": raw}
                    raise error_for(
                        response.status,
                        str(data.get("reason") or response.reason or response.status),
                        str(data.get("message") or ""),
                        request,
                    )
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise error_for(
                            int(obj.get("code") or 0),
                            str(obj.get("reason") or "Error"),
                            str(obj.get("message") or ""),
                            request,
                        )
                    yield str(event.get("type")), obj
        except TRANSIENT as exc:
            raise Unavailable(0, type(exc).__name__, str(exc), request) from exc

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
        self,
        resource: rq.Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        priority: Priority = Priority.STATUS,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.send(
            rq.merge_patch(resource, namespace, name, patch), priority=priority
        )
        return result

    async def apply(
        self, resource: rq.Resource, body: dict[str, Any], *, priority: Priority = Priority.STATUS
    ) -> dict[str, Any]:
        """Server-side apply of a whole object we own (see ``requests.apply``)."""
        meta = body["metadata"]
        result: dict[str, Any] = await self.send(
            rq.apply(resource, meta["namespace"], meta["name"], body), priority=priority
        )
        return result

    async def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        """A scale action: the first write served (Priority.SCALE)."""
        await self.send(rq.patch_scale(namespace, deployment, replicas), priority=Priority.SCALE)

    async def patch_status(
        self,
        resource: rq.Resource,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        deferrable: bool = False,
        priority: Priority = Priority.STATUS,
    ) -> dict[str, Any] | None:
        """Merge-patch the status; the object after it. ``deferrable`` raises WriteDeferred
        rather than wait for the write budget."""
        reply = await self.send(
            rq.patch_status(resource, namespace, name, status),
            deferrable=deferrable,
            priority=priority,
        )
        return reply if isinstance(reply, dict) else None

    async def post_event(
        self, involved: dict[str, Any], *, type_: str, reason: str, message: str
    ) -> None:
        """An Event, aggregated: a repeated reason on one object raises its count (its
        token: Priority.EVENT)."""
        await self.events.post(involved, type_=type_, reason=reason, message=message)
