"""Durability of each Redis endpoint, read rarely: once a minute per endpoint (not per poll,
and not per RedisStream: every stream on an endpoint shares one reading), and again 10 s after
a failed read. Cached by gateway object, so a gateway that goes away takes its reading with it."""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from dataclasses import dataclass

from streamherd.api.status import ConditionStatus, Reason
from streamherd.decisions.durability import Assessment, assess
from streamherd.gateway import GatewayError, RedisGateway
from streamherd.metrics import Metrics

READ_EVERY = 60.0
RETRY_AFTER = 10.0


@dataclass
class _Reading:
    at: float
    assessment: Assessment
    ok: bool


class DurabilityWatch:
    def __init__(
        self, metrics: Metrics, *, every: float = READ_EVERY, retry: float = RETRY_AFTER
    ) -> None:
        self._metrics = metrics
        self._every, self._retry = every, retry
        self._readings: weakref.WeakKeyDictionary[RedisGateway, _Reading] = (
            weakref.WeakKeyDictionary()
        )
        self._locks: weakref.WeakKeyDictionary[RedisGateway, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def of(self, gateway: RedisGateway, *, reachable: bool = True) -> Assessment:
        """The endpoint's assessment, read now if the last one is old enough. Not
        ``reachable`` (the poll just failed): Unknown, without trying to connect again."""
        if not reachable:
            assessment = Assessment(
                ConditionStatus.UNKNOWN,
                Reason.UNKNOWN,
                "Redis cannot be read (see Ready): persistence and replication not known",
            )
            self._readings.pop(gateway, None)  # read again as soon as it answers
            self._record(gateway.where, assessment)
            return assessment
        lock = self._locks.setdefault(gateway, asyncio.Lock())
        async with lock:  # many RedisStreams on one endpoint: one read
            reading = self._readings.get(gateway)
            now = time.monotonic()
            if reading is not None and now - reading.at < (
                self._every if reading.ok else self._retry
            ):
                return reading.assessment
            try:
                servers = await gateway.durability()
            except GatewayError as exc:
                assessment = assess([])
                assessment = Assessment(
                    assessment.status,
                    assessment.reason,
                    f"persistence and replication not readable ({exc.message}): not known",
                )
                ok = False
            else:
                assessment, ok = assess(servers), True
            self._readings[gateway] = _Reading(time.monotonic(), assessment, ok)
            self._record(gateway.where, assessment)
            return assessment

    def _record(self, endpoint: str, assessment: Assessment) -> None:
        durable = assessment.durable
        self._metrics.endpoint_durable.labels(endpoint).set(
            math.nan if durable is None else float(durable)
        )
        replicas = assessment.fields.get("connectedReplicas")
        self._metrics.endpoint_replicas.labels(endpoint).set(
            math.nan if replicas is None else float(replicas)
        )
