"""The flagship example (manifests/examples/conversations.yaml) made runnable on the local
cluster, and what its story needs: calls that publish through the SDK, consumer pods to kill,
and the bookkeeping that checks, by id, that every event was processed by every group.

Shared by `make demo` (e2e/demo.py), the demo's and the scenario's tests (tests/flagship), tests/retention,
the e2e scenarios and `make bench-e2e-burst`: one place that knows how the example runs here.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from e2e import consumer
from streamherd.consumer import StreamClient
from streamherd.fields import GROUP_FIELD, ORIGIN_ID_FIELD, STREAM_FIELD
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY, is_auxiliary

EXAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "conversations.yaml"
GROUPS = {"brain": "brain", "compliance": "compliance", "crm": "crm-enricher"}
"""ConsumerGroup name -> Redis group name."""
DEPLOYMENTS = {"brain": "conversation-brain", "compliance": "compliance-scanner"}
"""The Deployments the example refers to (crm's, ``crm-consumers``, streamherd owns)."""
PATTERN = "conv:*"
POISON_FIELD = "poison"


def example(
    redis_url: str,
    *,
    namespace: str = "default",
    image: str = consumer.IMAGE,
    env: Mapping[str, str] | None = None,
    work_ms: Mapping[str, int] | None = None,
    autoscaling: Mapping[str, Mapping[str, Any]] | None = None,
    recovery: Mapping[str, Any] | None = None,
    health: Mapping[str, Any] | None = None,
    retention: Mapping[str, Any] | None = None,
    replicas: int = 0,
) -> list[dict[str, Any]]:
    """The example's objects, runnable here: a local Redis (no Secret), the two Deployments
    it refers to running SDK consumers (e2e/consumer.py; ``replicas`` each to start with),
    crm's template made runnable. Per ConsumerGroup name: ``work_ms`` (each consumer's time
    per event) and ``autoscaling`` (merged into the example's); ``recovery`` and ``health``
    are merged into every group's; ``retention`` into the RetentionPolicy's spec, or None to leave the policy
    out (and the RedisStream's reference to it)."""
    work = {"brain": 25, "compliance": 10, "crm": 15, **(work_ms or {})}
    knobs = {"MODE": "history", "POISON_FIELD": POISON_FIELD, **(env or {})}
    out: list[dict[str, Any]] = []
    for name, deployment in DEPLOYMENTS.items():
        out.append(
            consumer.deployment(
                deployment,
                redis_url=redis_url,
                group=GROUPS[name],
                pattern=PATTERN,
                replicas=replicas,
                image=image,
                namespace=namespace,
                env={**knobs, "WORK_MS": str(work[name])},
            )
        )
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        spec, kind, name = doc["spec"], doc["kind"], doc["metadata"]["name"]
        if kind == "RetentionPolicy":
            if retention is None:
                continue
            spec.update(retention)
        elif kind == "RedisStream":  # the example reads the URL from a Secret: a local Redis
            spec["redis"] = {"url": redis_url}
            if retention is None:
                spec.pop("retentionPolicyRef", None)
        else:
            spec["recovery"] = {**spec.get("recovery", {}), **(recovery or {})}
            if health:
                spec["health"] = {**spec.get("health", {}), **health}
            spec["autoscaling"] = {**spec["autoscaling"], **(autoscaling or {}).get(name, {})}
            if "template" in spec["consumers"]:  # crm: a Deployment streamherd owns
                (container,) = spec["consumers"]["template"]["spec"]["containers"]
                container.update(
                    image=image,
                    command=["python", "-m", "e2e.consumer"],
                    env=[
                        {"name": k, "value": v}
                        for k, v in {**knobs, "WORK_MS": str(work[name])}.items()
                    ],
                )
        out.append(doc)
    return out


def deployment_of(name: str) -> str:
    """The Deployment of a ConsumerGroup of the example."""
    return DEPLOYMENTS.get(name, f"{name}-consumers")


# ------------------------------------------------------------------ calls


@dataclass
class Calls:
    """Simulated calls on their own thread and event loop: each live call publishes an
    event every ~``interval`` s (with jitter) to ``conv:<id>`` through the SDK's ``publish``
    (a new call's stream is announced in the registry of new streams). ``wanted`` live calls
    are kept; a call ends after ``turns`` events (then a new one takes its place while
    ``wanted`` says so), or when ``wanted`` drops. A share ``poison`` of events carry the
    poison field (the consumers fail them until fixed). Every id written is recorded."""

    url: str
    interval: float = 0.25
    turns: int | None = None
    poison: float = 0.0
    seed: int = 16
    text: str = ""
    maxlen: int = 10_000
    produced: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    poisoned: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    wanted: int = 0
    poison_next: int = 0
    """The next this many events (of different calls) carry the poison field."""
    started_calls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _live: int = 0
    _talking: int = 0
    """Calls still writing (hanging up ones included)."""
    _ending: set[str] = field(default_factory=set)
    """Calls hanging up: they stop after the write at hand (never cancelled mid-write, so
    every id written is recorded)."""

    @property
    def sent(self) -> int:
        with self._lock:
            return sum(len(ids) for ids in self.produced.values())

    @property
    def live(self) -> int:
        return self._live

    def start(self) -> Calls:
        self._thread = threading.Thread(target=self._run, daemon=True, name="calls")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def hang_up(self, timeout: float = 30.0) -> set[tuple[str, str]]:
        """End every call and wait until none writes any more; every (stream, id) written."""
        self.wanted = 0
        deadline = time.monotonic() + timeout
        time.sleep(0.2)  # the calls loop sees ``wanted`` within 50 ms
        while self._talking and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._talking:
            raise TimeoutError(f"{self._talking} calls still writing after {timeout}s")
        return self.ids()

    def ids(self) -> set[tuple[str, str]]:
        """Every (stream, id) written so far."""
        with self._lock:
            return {(key, i) for key, ids in self.produced.items() for i in ids}

    def poison_ids(self) -> set[tuple[str, str]]:
        with self._lock:
            return {(key, i) for key, ids in self.poisoned.items() for i in ids}

    def burst(
        self,
        events: int,
        streams: int,
        prefix: str = "conv:burst-",
        *,
        announced_ahead: float = 0.0,
    ) -> None:
        """``events`` written at once (pipelined) over ``streams`` new streams, from this
        thread (blocking), with the same poison share. The keys are announced in the registry
        ``announced_ahead`` seconds before the streams' first entries (the SDK's ``publish``
        announces after its first XADD; a publisher of another kind may not): consumers and
        the operator that look in between find no stream, and must not forget the keys."""
        rng = random.Random(self.seed + 1)
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            keys = [f"{prefix}{i:04d}" for i in range(streams)]
            # Registered: the operator and the SDK's pattern consumers learn them in O(new keys).
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.xadd(REGISTRY_KEY, {REGISTRY_FIELD: key}, maxlen=100_000, approximate=True)
            pipe.execute()
            time.sleep(announced_ahead)
            for start in range(0, events, 1000):
                pipe = client.pipeline(transaction=False)
                sent = []
                for n in range(start, min(events, start + 1000)):
                    key = keys[n % streams]
                    bad = rng.random() < self.poison
                    fields = {"msg": f"{key}/{n}", **({POISON_FIELD: "1"} if bad else {})}
                    pipe.xadd(key, fields)
                    sent.append((key, bad))
                replies = pipe.execute()
                with self._lock:
                    for (key, bad), entry_id in zip(sent, replies, strict=True):
                        self.produced[key].append(entry_id)
                        if bad:
                            self.poisoned[key].append(entry_id)
        finally:
            client.close()

    def _take_poison(self) -> bool:
        with self._lock:
            if self.poison_next <= 0:
                return False
            self.poison_next -= 1
            return True

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        rng = random.Random(self.seed)
        # Each live call holds at most one connection (one publish at a time); redis-py's
        # pool raises past its default 100, which the full scenario's 200 calls exceed.
        client = StreamClient.from_url(self.url, maxlen=self.maxlen, max_connections=1_000)
        tasks: dict[str, asyncio.Task[None]] = {}
        next_id = 0
        try:
            while not self._stop.is_set():
                for key in [k for k, t in tasks.items() if t.done()]:
                    tasks.pop(key).result()
                    self._ending.discard(key)
                while len(tasks) - len(self._ending & set(tasks)) < self.wanted:
                    next_id += 1
                    key = f"conv:{next_id:05d}"
                    tasks[key] = asyncio.create_task(self._call(client, key, rng))
                    self.started_calls = next_id
                live = [k for k in tasks if k not in self._ending]
                for key in live[: max(0, len(live) - self.wanted)]:  # the oldest hang up first
                    self._ending.add(key)
                self._live = len(tasks) - len(self._ending & set(tasks))
                self._talking = len(tasks)
                await asyncio.sleep(0.05)
        finally:
            self._ending.update(tasks)  # hang up: each call finishes the write it is doing
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            self._live = self._talking = 0
            await client.close()

    async def _call(self, client: StreamClient, key: str, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, self.interval))  # calls do not speak in lockstep
        turn = 0
        while (self.turns is None or turn < self.turns) and key not in self._ending:
            bad = rng.random() < self.poison or self._take_poison()
            fields = {
                "msg": f"{key}/{turn}",
                "speaker": "caller" if turn % 2 else "agent",
                **({"text": self.text} if self.text else {}),
                **({POISON_FIELD: "1"} if bad else {}),
            }
            entry_id = await client.publish(key, fields)
            with self._lock:
                self.produced[key].append(entry_id)
                if bad:
                    self.poisoned[key].append(entry_id)
            turn += 1
            await asyncio.sleep(self.interval * rng.uniform(0.8, 1.2))


# ------------------------------------------------------------------ bookkeeping


def processed(r: redis.Redis, group: str) -> list[tuple[str, str, str, str]]:
    """(stream, origin id, consumer, entry id) per processing, in order (the consumers'
    PROCESSED_LOG)."""
    rows = r.lrange(f"processed-log:{group}", 0, -1)
    return [tuple(row.split(" ")) for row in rows]  # type: ignore[misc]


def processed_ids(r: redis.Redis, group: str) -> set[tuple[str, str]]:
    return {(key, origin) for key, origin, _, _ in processed(r, group)}


def dead_letters(r: redis.Redis, group: str, pattern: str = "conv:*:dlq") -> list[tuple[str, str]]:
    """(stream, origin id) of the dead-letter records for ``group``, sorted."""
    out = []
    for key in r.scan_iter(match=pattern, _type="stream", count=1000):
        for _, record in r.xrange(key):
            if record.get(GROUP_FIELD) == group:
                out.append((record[STREAM_FIELD], record[ORIGIN_ID_FIELD]))
    return sorted(out)


def call_streams(r: redis.Redis, pattern: str = PATTERN) -> list[str]:
    return sorted(
        k for k in r.scan_iter(match=pattern, count=1000, _type="stream") if not is_auxiliary(k)
    )


def used_memory(r: redis.Redis) -> int:
    """INFO memory's used_memory less what client connections hold, as CLIENT LIST counts it
    for each one (tot-mem: its struct, query and reply buffers, ~20 KB each), and less the
    script cache: consumer pods come and go with autoscaling, connection pools grow with
    concurrency, the janitor loads its scripts on its first pass; calls do none of that.
    What is left is the data and Redis's own structures."""
    before = r.info("memory")
    clients = sum(int(c["tot-mem"]) for c in r.client_list())
    after = r.info("memory")
    return (
        min(int(before["used_memory"]), int(after["used_memory"]))
        - clients
        - int(after["used_memory_scripts"])
    )


def held_by(
    r: redis.Redis, group: str, running: Iterable[str], pattern: str = PATTERN
) -> Counter[str]:
    """Pending entries per running consumer of ``group``, over the call streams."""
    alive = set(running)
    held: Counter[str] = Counter()
    for key in call_streams(r, pattern):
        try:
            summary = r.xpending(key, group)
        except redis.ResponseError:
            continue
        for c in summary.get("consumers") or []:
            if c["name"] in alive:
                held[c["name"]] += int(c["pending"])
    return held


def missing(r: redis.Redis, group: str, produced: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """What ``group`` has neither processed nor dead-lettered (still in its dead-letter
    stream) of ``produced``."""
    return produced - processed_ids(r, group) - set(dead_letters(r, group))
