"""A whole janitor pass (``run_pass``, what the operator and `streamherd janitor` run) on real
Redis with real consumer processes (e2e/consumer.py): both strategies, with consumers that
read only ">" and consumers that read their own history."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aredis
from e2e.cluster.processes import REPO_ROOT
from e2e.cluster.redis import RedisServer
from tests.janitor.helpers import deliver, idle, pel, recovery, seed

from streamherd.controller.janitor_pass import Outcome, Progress, observed_states, run_pass
from streamherd.decisions.recovery import Pods
from streamherd.fields import DELIVERIES_FIELD, ORIGIN_ID_FIELD
from streamherd.gateway import RedisGateway

KEY = "orders"
DEAD = "web-5d8f7c6b9a-x2x4z"  # named after a pod of Deployment "web" that is gone
LIVE = ("web-5d8f7c6b9a-bbbbb", "web-5d8f7c6b9a-ccccc")


class Consumers:
    """e2e/consumer.py processes on one stream and group "g"."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "STREAMHERD_REDIS_URL": self.server.url,
            "STREAMHERD_STREAM": KEY,
            "STREAMHERD_GROUP": "g",
            "STREAMHERD_CONSUMER": name,
            "WORK_MS": "2",
            "HISTORY_EVERY_S": "0.2",
            **env,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "e2e.consumer"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(server: RedisServer) -> Iterator[Consumers]:
    started = Consumers(server)
    yield started
    started.stop()


async def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("strategy", "mode"),
    # Claim is for consumers that read their own history (a ">" reader never sees what is
    # claimed to it: that is what Requeue is for).
    [("Requeue", "new"), ("Requeue", "history"), ("Claim", "history")],
)
async def test_every_message_is_processed_after_a_crash(
    gateway: RedisGateway, r: aredis.Redis, processes: Consumers, strategy: str, mode: str
) -> None:
    await seed(r, KEY, 120)
    (poison_id,) = await seed(r, KEY, 1, start=120, poison="1")
    # A consumer crashes in the middle of its first batch: read 10, acked 4, exit(1).
    crasher = processes.start(DEAD, MODE=mode, BATCH="10", CRASH_AFTER="5")
    assert await asyncio.to_thread(crasher.wait, 10) == 1
    stranded = set(await pel(r, KEY))
    assert len(stranded) == 6
    for name in LIVE:
        processes.start(name, MODE=mode)
    pods = Pods("web", frozenset(LIVE), frozenset(LIVE), gone=frozenset({DEAD}))

    async def read_pods() -> Pods:
        return pods

    spec = recovery(strategy=strategy, min_idle="500ms", max_deliveries=3, batch_size=50)
    progress, runs = Progress(), []
    expected = {str(i) for i in range(120)}

    async def done() -> bool:
        runs.append(await run_pass(gateway, [KEY], "g", spec, pods=read_pods, progress=progress))
        processed = await r.smembers("processed:g")
        if processed != expected or await r.xlen(f"{KEY}:dlq") != 1 or await pel(r, KEY):
            return False
        # The dead consumer's name goes in the pass after its last entry went: wait for it too.
        return DEAD not in {c["name"] for c in await r.xinfo_consumers(KEY, "g")}

    await wait_for(done, 20, f"{strategy}/{mode}: not everything processed or dead-lettered")

    total = sum_outcomes(runs)
    assert await r.smembers("processed:g") == expected, "nothing lost"
    ((_, record),) = await r.xrange(f"{KEY}:dlq")
    assert record[ORIGIN_ID_FIELD] == poison_id and record["msg"] == "120"
    assert int(record[DELIVERIES_FIELD]) >= 3, "counted across re-queues"
    assert total.dead_lettered == 1
    assert total.acked == total.requeued + total.dead_lettered + total.dropped, (
        "the janitor acked exactly what it moved: nothing twice, nothing a consumer had"
    )
    names = {c["name"] for c in await r.xinfo_consumers(KEY, "g")}
    assert DEAD not in names and DEAD in total.removed, "its pod is gone: so is its name"
    if strategy == "Claim":
        assert total.claimed >= len(stranded) - 1, "the crashed consumer's entries were claimed"
        assert total.requeued == 0 and await r.xlen(KEY) == 121, "nothing copied: ids kept"
    else:
        assert total.claimed == 0 and total.requeued >= len(stranded)


def sum_outcomes(runs: list[Outcome]) -> Outcome:
    total = Outcome()
    for name in ("requeued", "claimed", "dead_lettered", "dropped", "acked"):
        setattr(total, name, sum(getattr(run, name) for run in runs))
    total.removed = [name for run in runs for name in run.removed]
    return total


async def test_a_pass_covers_every_stream_and_stops_at_its_time_budget(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """Three streams of a pattern, 50 stale entries each, batches of 10 (one call per stream
    per round, in one pipeline), a budget that lasts about two rounds: each pass stops at the
    budget; the next goes on from its cursors; in the end every entry was moved once."""
    keys = ["orders:eu", "orders:us", "orders:asia"]
    for key in keys:
        await seed(r, key, 50)
        await deliver(r, key, "stuck", 50)
    await idle(0.12)
    now = [0.0]

    def clock() -> float:
        now[0] += 0.1  # every look at the clock: 100 ms later
        return now[0]

    async def no_pods() -> None:
        return None

    spec = recovery(min_idle="100ms", batch_size=10, time_budget="500ms")
    progress, runs = Progress(), []
    for _ in range(10):
        outcome = await run_pass(
            gateway, keys, "g", spec, pods=no_pods, progress=progress, clock=clock
        )
        runs.append(outcome)
        if outcome.complete:
            break
    assert not runs[0].complete and runs[-1].complete
    assert len(runs) > 2, "the budget really cut passes short"
    assert all(run.requeued <= 60 for run in runs), "at most the budget's worth of rounds"
    assert sum(run.requeued for run in runs) == 150, "each entry once"
    for key in keys:
        assert await pel(r, key) == {}
        assert await r.xlen(key) == 100
    assert progress.cursors == {}, "every scan reached the end"


async def test_a_pass_skips_streams_without_the_group(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, "orders:1", 3)
    await r.xadd("orders:2", {"msg": "x"})  # a stream of the pattern where "g" does not exist

    async def no_pods() -> None:
        return None

    outcome = await run_pass(
        gateway,
        ["orders:1", "orders:2", "orders:3"],
        "g",
        recovery(),
        pods=no_pods,
        progress=Progress(),
    )
    assert outcome.keys == 1 and outcome.complete


async def test_streams_with_nothing_pending_cost_nothing_once_looked_at(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """Cost proportional to work: 300 idle streams (a live pod's consumer, nothing pending)
    and 2 with stale entries. The first pass reads every stream's consumers once; after that
    an idle stream costs nothing until the poll shows a change (more consumers) or one of its
    consumers' pods is gone; the active ones go in one pipeline per step."""
    keys = [f"calls:{i}" for i in range(302)]
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xadd(key, {"msg": "hello"})
        pipe.xgroup_create(key, "g", "0")
    await pipe.execute()
    for key in keys[2:]:
        await r.xreadgroup("g", "web-h-live1", {key: ">"})
        await r.xack(key, "g", *[i for i, _ in (await r.xrange(key))])
    for key in keys[:2]:
        await deliver(r, key, "stuck", 1)
    await idle(0.12)
    pods = Pods("web", frozenset({"web-h-live1"}), frozenset({"web-h-live1"}))

    async def read_pods() -> Pods:
        return pods

    spec = recovery(min_idle="100ms")
    progress = Progress()

    async def one_pass() -> tuple[Outcome, int]:
        observed = observed_states(await gateway.observe(keys), keys, "g")
        before = gateway.round_trips
        outcome = await run_pass(
            gateway, keys, "g", spec, pods=read_pods, progress=progress, observed=observed
        )
        return outcome, gateway.round_trips - before

    first, first_trips = await one_pass()
    assert (first.keys, first.looked, first.requeued) == (302, 302, 2)
    assert first_trips == 2, "consumers of all in one pipeline, then the two stale scans in one"

    second, second_trips = await one_pass()
    assert (second.looked, second_trips) == (0, 0), "idle streams cost nothing"

    await r.xadd(keys[100], {"msg": "more"})
    await r.xreadgroup("g", "web-h-new01", {keys[100]: ">"})
    await r.xack(keys[100], "g", *[i for i, _ in (await r.xrange(keys[100]))])
    third, third_trips = await one_pass()
    assert (third.looked, third_trips) == (1, 1), "only the stream whose consumers changed"

    pods = Pods("web", frozenset(), frozenset(), gone=frozenset({"web-h-live1"}))
    fourth, fourth_trips = await one_pass()
    assert fourth.looked == 300 and len(fourth.removed) == 300, "its pod is gone: removed"
    assert fourth_trips == 2, "consumers in one pipeline, removals in another"
    for key in keys[2:]:
        assert "web-h-live1" not in {c["name"] for c in await r.xinfo_consumers(key, "g")}
