"""The flagship example, manifests/examples/conversations.yaml, with its RetentionPolicy (its
durations shortened) on the local cluster, real consumers run by the kubelet: calls start,
end, every event is processed by every group, the ended calls' streams disappear once every
group is done, and Redis memory returns to where it started."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from e2e import demo, flagship
from e2e.cluster.processes import wait_until
from tests.harness import Harness

from streamherd.consumer import StreamClient

CALLS = 12
TURNS = 16  # an event every 250 ms: 4 s a call
GROUPS = ("brain", "compliance", "crm-enricher")
TEXT = "so what I was trying to say about the renewal is " * 4  # a turn of transcript
SHORTENED = {"maxAge": "2s", "deleteIdleStreamsAfter": "3s", "interval": "1s"}
"""The example's 2h / 6h / 1m: calls of 4 s get trimmed while they run, then deleted."""
TOLERANCE = 24 * 1024
"""What may stay of the calls: the registry's entry per call (~100 bytes; the registry is
capped: 4.7 KB for these calls) and allocator size-class rounding. Measured: ~10 KB."""


def call_streams(h: Harness) -> list[str]:
    return flagship.call_streams(h.r)


def used_memory(h: Harness) -> int:
    return flagship.used_memory(h.r)


def calls(h: Harness, count: int) -> set[str]:
    """``count`` calls writing TURNS events each, 250 ms apart, through the SDK's publish (its
    first write to a call stream registers it). Returns every message written."""
    written: set[str] = set()

    async def call(index: int) -> None:
        key = f"conv:{index:04d}"
        async with StreamClient.from_url(h.redis_server.url) as client:
            for turn in range(TURNS):
                msg = f"{key}/{turn}"
                speaker = "caller" if turn % 2 else "agent"
                await client.publish(key, {"msg": msg, "speaker": speaker, "text": TEXT})
                written.add(msg)
                await asyncio.sleep(0.25)

    threads = [threading.Thread(target=asyncio.run, args=(call(i),)) for i in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    return written


def ended_and_deleted(h: Harness, written: set[str]) -> None:
    """Every message processed by every group (checked by message), then every call stream
    gone; the consumers' record of what they processed (test bookkeeping) is removed."""

    def all_processed() -> bool:
        return all(set(h.r.smembers(f"processed:{g}")) >= written for g in GROUPS)

    wait_until(
        all_processed,
        90,
        interval=0.5,
        message=lambda: (
            f"processed: { {g: h.r.scard(f'processed:{g}') for g in GROUPS} } of {len(written)}\n"
            f"{h.logs()[-3000:]}"
        ),
    )
    wait_until(
        lambda: call_streams(h) == [],
        60,
        interval=0.2,
        message=lambda: f"still there: {call_streams(h)}\n{h.logs()[-3000:]}",
    )
    for group in GROUPS:
        h.r.delete(f"processed:{group}", f"processed-log:{group}")


def test_ended_calls_are_trimmed_then_deleted_and_memory_returns(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    # Redis 7's latency tracking keeps a histogram per command name, allocated the first time
    # the command runs (tens of KB in all, not keys, outside MEMORY STATS' overhead): off, so
    # what is measured is the data and Redis's own structures.
    h.r.config_set("latency-tracking", "no")
    for doc in demo.resources(h.pod_redis_url):
        if doc["kind"] == "RetentionPolicy":
            assert doc["spec"]["deleteIdleStreamsAfter"] and doc["spec"]["respectConsumerGroups"]
            doc["spec"].update(SHORTENED)
        h.api.create(doc)
    h.start()
    for name in ("brain", "compliance", "crm"):
        h.wait_ready("ConsumerGroup", name, timeout=60)
    h.wait_ready("RetentionPolicy", "live-calls", timeout=30)
    baseline = used_memory(h)

    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], used_memory(h))
            sampling.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    written = calls(h, CALLS)
    sampling.set()
    sampler.join()
    assert len(written) == CALLS * TURNS
    ended_and_deleted(h, written)
    assert [k for k in h.r.scan_iter(match="*dlq*")] == [], "nothing was dead-lettered"
    status = h.wait_status(
        "RetentionPolicy", "live-calls", lambda s: (s.get("deletedStreams") or 0) >= CALLS
    )
    assert status["deletedStreams"] == CALLS and not status.get("unconsumedDropped")
    assert status["trimmedEntries"] > 0, "the calls were trimmed (maxAge) while they ran"
    grown = peak[0] - baseline
    assert grown > 4 * TOLERANCE, f"the calls used memory: {grown} bytes at the peak"
    wait_until(
        lambda: used_memory(h) - baseline <= TOLERANCE,
        30,
        interval=0.2,
        message=lambda: (
            f"used_memory {used_memory(h)} vs {baseline} at the start (peak {peak[0]}): "
            f"{h.r.info('memory')}"
        ),
    )
