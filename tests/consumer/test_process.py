"""Consumer processes (e2e/consumer.py, a user of the SDK, and the sync facade's ``run``):
SIGTERM mid-batch finishes and acknowledges the batch, stops reading, exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import redis
from e2e.cluster.processes import REPO_ROOT, wait_until
from e2e.cluster.redis import RedisServer

from streamherd.consumer import SyncStreamClient


@pytest.fixture
def sr(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def start(server: RedisServer, argv: list[str], **env: str) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "STREAMHERD_REDIS_URL": server.url,
        "STREAMHERD_STREAM": "orders",
        "STREAMHERD_GROUP": "g",
        "STREAMHERD_CONSUMER": "pod-1",
        **env,
    }
    return subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("mode", ["new", "history"])
def test_sigterm_mid_batch_finishes_acks_and_exits_0(
    server: RedisServer, sr: redis.Redis, mode: str
) -> None:
    sr.xgroup_create("orders", "g", id="0", mkstream=True)
    batch = [sr.xadd("orders", {"msg": f"b{i}"}) for i in range(10)]
    proc = start(
        server, [sys.executable, "-m", "e2e.consumer"], WORK_MS="150", BATCH="10", MODE=mode
    )
    try:
        wait_until(lambda: sr.scard("processed:g") >= 2, 20, message="never started its batch")
        assert sr.xpending("orders", "g")["pending"] >= 5, "the batch is read, half done"
        proc.send_signal(signal.SIGTERM)
        later = [sr.xadd("orders", {"msg": f"late{i}"}) for i in range(5)]
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert sr.smembers("processed:g") == {f"b{i}" for i in range(10)}, output
    assert sr.xpending("orders", "g")["pending"] == 0, "the batch in flight was acknowledged"
    (group,) = sr.xinfo_groups("orders")
    assert group["last-delivered-id"] == batch[-1], f"it read none of {later} after SIGTERM"
    assert "stopping" in output


def test_the_sync_facade(server: RedisServer, sr: redis.Redis) -> None:
    with SyncStreamClient(server.url, group="g", consumer="me", maxlen=100) as client:
        first = client.publish("orders", {"msg": "1"})
        sr.xgroup_create("orders", "g", id="0")
        (e,) = client.read_group(["orders"])
        assert (e.id, e.fields, e.deliveries) == (first, {"msg": "1"}, 1)
        assert [p.id for p in client.pending("orders")] == [first]
        assert client.ack("orders", e.id) == 1
        assert client.info("orders").group("g") is not None
    script = textwrap.dedent(
        """
        import redis
        from streamherd.consumer import run
        r = redis.Redis.from_url(__import__("os").environ["STREAMHERD_REDIS_URL"])
        def handle(entry):  # a plain function: it runs in a worker thread
            r.sadd("done", entry.fields["msg"])
        raise SystemExit(run(handle))
        """
    )
    for i in range(5):
        sr.xadd("orders", {"msg": f"m{i}"})
    proc = start(server, [sys.executable, "-c", script])
    try:
        wait_until(lambda: sr.scard("done") == 5, 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert sr.xpending("orders", "g")["pending"] == 0
