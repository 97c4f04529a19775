"""What the autoscalers know of the Deployments their ConsumerGroups reference: replicas
asked and ready, and the template hash of one streamherd owns, without a GET per poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from streamherd.kube import Forbidden, Gone, KubeClient, KubeError
from streamherd.kube import requests as rq
from streamherd.kube.manifests import deployment_state

RELIST_SECONDS = 30.0
"""How often the Deployments of a namespace some group uses are listed again (the default of
--deployment-relist-interval)."""

Key = tuple[str, str]
logger = logging.getLogger(__name__)
WATCH_SECONDS = 300
"""How long one watch request lasts before the server ends it (and we resume)."""


class DeploymentIndex:
    """The Deployments ConsumerGroups reference, by (namespace, name); nothing of any other.

    What keeps it right:

    - *Which*: a group loop names the Deployment it uses with every lookup (``lookup(who,
      ...)``) and lets go when it stops (``release``); an entry lives while some group
      references it. Only the namespaces some group uses are watched (one watch each, our
      own client's, not kopf's cluster-wide one): a Deployment elsewhere is never received;
      watch events of unreferenced Deployments in a watched namespace are dropped.
    - *Fresh*: each namespace's watch starts from its LIST's resourceVersion and resumes
      from the last one it saw (BOOKMARKs included) and hands every event to ``observe``;
      our own create goes to ``created``. The watch of a namespace no group uses any more
      is stopped.
    - *Nothing stale after a broken watch*: a watch that resumes too late gets 410 and
      lists the namespace again, replacing its entries by what the list holds (so a
      Deployment deleted while the watch was down is gone, not kept as a re-list by kopf
      kept it). As a belt, each namespace in use is also LISTed again every
      ``relist_every`` seconds (a watch silently stuck on a dead connection).
    - *Start-up and new references*: a lookup in a namespace not listed yet lists it first
      and waits for that list (a name newly referenced in a namespace listed before: a GET),
      so no group reports a missing Deployment that exists only because the first watch
      events had not arrived yet. A failed list leaves the answer
      unknown (``None`` with ``known`` False), never "not found".

    In memory only: a restart (or a second replica) starts empty and lists what it needs.
    """

    def __init__(self, kube: KubeClient, relist_every: float = RELIST_SECONDS) -> None:
        self._kube = kube
        self.relist_every = relist_every
        self._states: dict[Key, dict[str, Any]] = {}
        self._users: dict[str, Key] = {}
        self._listed_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._touched: dict[str, set[Key]] = {}
        """Per namespace being listed, what watch events changed meanwhile (newer than the
        list may be: the list does not overwrite them)."""
        self._versions: dict[str, str] = {}
        """Per namespace, the resourceVersion its watch resumes from (its last list's, or
        the last event's)."""
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._watch_refused: dict[str, Forbidden] = {}
        """Per namespace, the 403 its watch got (until a watch there is served again): the
        index still re-lists it, but the groups there say what they miss."""
        self.received: int = 0
        """Watch events received (tests: none of a namespace no group uses)."""

    def referenced(self, key: Key) -> bool:
        return key in self._users.values()

    def get(self, key: Key) -> dict[str, Any] | None:
        """The last known state (no I/O): for readers after the loop's own ``lookup``."""
        return self._states.get(key)

    def watch_refused(self, namespace: str) -> Forbidden | None:
        """The 403 of this namespace's watch, while it lasts (a list still serves)."""
        return self._watch_refused.get(namespace)

    def known(self, namespace: str) -> bool:
        """Whether the namespace has been listed: only then is a missing entry missing."""
        return namespace in self._listed_at

    async def lookup(self, who: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The state of Deployment ``namespace/name``, which ``who`` uses (None: it does not
        exist, or with ``known(namespace)`` False, not known yet). Lists the namespace first
        when it was never listed or its last list is older than ``relist_every``."""
        key = (namespace, name)
        new = not self.referenced(key)
        if self._users.get(who) != key:
            self._users[who] = key
            self._forget_unreferenced()
        listed = self._listed_at.get(namespace)
        if listed is None or time.monotonic() - listed >= self.relist_every:
            await self._relist(namespace)
            self._watch(namespace)
        elif new and key not in self._states:
            # Newly referenced in a namespace listed before (the list kept only what was
            # referenced then): one GET, not a list.
            body = await self._kube.get(rq.DEPLOYMENTS, namespace, name)
            if body is not None and self.referenced(key) and key not in self._states:
                self._states[key] = deployment_state(body)
        return self._states.get(key)

    def release(self, who: str) -> None:
        if self._users.pop(who, None) is not None:
            self._forget_unreferenced()

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a watched namespace."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if not self.referenced(key):
            return
        if key[0] in self._touched:
            self._touched[key[0]].add(key)
        if event_type == "DELETED":
            self._states.pop(key, None)
        else:
            self._states[key] = deployment_state(body)

    def created(self, body: Mapping[str, Any]) -> None:
        """Our own create, before its watch event arrives."""
        self.observe("ADDED", body)

    async def _relist(self, namespace: str) -> None:
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        started = time.monotonic()
        async with lock:
            listed = self._listed_at.get(namespace)
            if listed is not None and listed >= started:
                return  # listed by another loop while this one waited for the lock
            touched = self._touched[namespace] = set()
            try:
                items, version = await self._kube.list_versioned(rq.DEPLOYMENTS, namespace)
            finally:
                del self._touched[namespace]
            if version:
                self._versions[namespace] = version
            present = {
                (namespace, str(item["metadata"]["name"])): deployment_state(item) for item in items
            }
            for key in [k for k in self._states if k[0] == namespace]:
                if key not in present and key not in touched:
                    del self._states[key]
            for key, state in present.items():
                if self.referenced(key) and key not in touched:
                    self._states[key] = state
            self._listed_at[namespace] = time.monotonic()

    def _forget_unreferenced(self) -> None:
        used = set(self._users.values())
        for key in [k for k in self._states if k not in used]:
            del self._states[key]
        namespaces = {ns for ns, _ in used}
        for namespace in [ns for ns in self._listed_at if ns not in namespaces]:
            del self._listed_at[namespace]  # listed afresh when a group uses it again
            self._versions.pop(namespace, None)
        for namespace in [ns for ns in self._watches if ns not in namespaces]:
            self._watches.pop(namespace).cancel()
            self._watch_refused.pop(namespace, None)

    def _watch(self, namespace: str) -> None:
        """Watch ``namespace`` (once listed) while some group uses it."""
        task = self._watches.get(namespace)
        if task is None or task.done():
            self._watches[namespace] = asyncio.get_running_loop().create_task(
                self._follow(namespace), name=f"deployments-watch-{namespace}"
            )

    async def _follow(self, namespace: str) -> None:
        failures = 0
        while True:
            version = self._versions.get(namespace)
            try:
                if version is None:
                    await self._relist(namespace)
                    continue
                async for event_type, body in self._kube.watch(
                    rq.DEPLOYMENTS, namespace, version, timeout_seconds=WATCH_SECONDS
                ):
                    failures = 0
                    self._watch_refused.pop(namespace, None)
                    self.received += 1
                    seen = (body.get("metadata") or {}).get("resourceVersion")
                    if seen:
                        self._versions[namespace] = str(seen)
                    if event_type != "BOOKMARK":
                        self.observe(event_type, body)
                failures = 0  # the server ended the watch: resume where it stopped
                self._watch_refused.pop(namespace, None)
            except Gone:
                logger.debug("deployments in %s: version %s gone, listing", namespace, version)
                self._versions.pop(namespace, None)
            except KubeError as exc:
                if isinstance(exc, Forbidden):
                    self._watch_refused[namespace] = exc
                failures += 1
                delay = random.uniform(0, min(30.0, 0.5 * 2**failures))
                logger.warning(
                    "watching deployments in %s: %s (again in %.1fs)", namespace, exc, delay
                )
                await asyncio.sleep(delay)

    async def close(self) -> None:
        tasks = list(self._watches.values())
        self._watches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
