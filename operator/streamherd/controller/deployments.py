"""What the autoscalers know of the Deployments their ConsumerGroups reference: replicas
asked and ready, and the template hash of one streamherd owns, without a GET per poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from streamherd.kube import KubeClient
from streamherd.kube import requests as rq
from streamherd.kube.manifests import deployment_state

RELIST_SECONDS = 30.0
"""How often the Deployments of a namespace some group uses are listed again (the default of
--deployment-relist-interval)."""

Key = tuple[str, str]


class DeploymentIndex:
    """The Deployments ConsumerGroups reference, by (namespace, name); nothing of any other.

    What keeps it right:

    - *Which*: a group loop names the Deployment it uses with every lookup (``lookup(who,
      ...)``) and lets go when it stops (``release``); an entry lives while some group
      references it. Watch events of other Deployments are dropped, not stored.
    - *Fresh*: kopf's Deployment watch hands every event to ``observe`` (ADDED, MODIFIED,
      DELETED) and our own create to ``created``.
    - *Nothing stale after a broken watch*: a watch that resumes too late gets 410 and kopf
      re-lists, but a re-list tells no one which objects vanished meanwhile (kopf's own
      indexes keep them too). So each namespace in use is LISTed again every
      ``relist_every`` seconds and its entries replaced by what the list holds: a Deployment
      deleted while the watch was down is gone within that time, whatever the watch missed.
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

    def referenced(self, key: Key) -> bool:
        return key in self._users.values()

    def get(self, key: Key) -> dict[str, Any] | None:
        """The last known state (no I/O): for readers after the loop's own ``lookup``."""
        return self._states.get(key)

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
        """A watch event (kopf's ``on.event``)."""
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
                items = await self._kube.list(rq.DEPLOYMENTS, namespace)
            finally:
                del self._touched[namespace]
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
