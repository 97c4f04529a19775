"""The consumer SDK on a Sentinel-managed primary, as the operator configures it (a
``redis+sentinel://`` STREAMHERD_REDIS_URL): a real consumer process (e2e/consumer.py) goes
on after SENTINEL FAILOVER and after its primary is SIGKILLed; every produced entry is
processed, by id, and none is left pending."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from e2e.cluster.processes import REPO_ROOT, wait_until
from e2e.cluster.redis import RedisSentinelSet

from streamherd.connecting import parse_address, sentinel_url


@pytest.fixture
def consumer_process(
    sentinels: RedisSentinelSet, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    url = sentinel_url(
        [parse_address(a) for a in sentinels.addresses], sentinels.master, 0, tls=False
    )
    log = open(tmp_path / "consumer.log", "wb")  # noqa: SIM115 - lives with the process
    env = {
        **os.environ,
        "STREAMHERD_REDIS_MODE": "Sentinel",
        "STREAMHERD_REDIS_URL": url,
        "STREAMHERD_STREAM": "orders",
        "STREAMHERD_GROUP": "g",
        "STREAMHERD_CONSUMER": "pod-1",
        "MODE": "history",
        "WORK_MS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "e2e.consumer"], env=env, cwd=REPO_ROOT, stdout=log, stderr=log
    )
    yield process
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def primary(sentinels: RedisSentinelSet) -> redis.Redis:
    assert sentinels.primary is not None
    return redis.Redis(port=sentinels.primary.port, decode_responses=True)


# SENTINEL FAILOVER under make e2e: the killed primary (the fault) stays in the suite;
# tests/gateway/test_sentinel.py follows both
@pytest.mark.e2e_variants("sentinel-failover")
@pytest.mark.parametrize("fault", ["sentinel-failover", "primary-killed"])
def test_an_sdk_consumer_follows_the_new_primary(
    sentinels: RedisSentinelSet,
    consumer_process: subprocess.Popen[bytes],
    tmp_path: Path,
    fault: str,
) -> None:
    r = primary(sentinels)
    r.xgroup_create("orders", "g", "0", mkstream=True)
    produced = {f"m{i}" for i in range(100)}
    for msg in sorted(produced):
        r.xadd("orders", {"msg": msg})

    def processed() -> set[str]:
        return primary(sentinels).smembers("processed:g")  # type: ignore[return-value]

    def log() -> str:
        return (tmp_path / "consumer.log").read_text(errors="replace")[-3000:]

    wait_until(lambda: processed() >= produced, 30, message=lambda: f"before: {log()}")
    if fault == "sentinel-failover":
        sentinels.failover()
    else:
        sentinels.kill_primary()
    after = primary(sentinels)
    late = {f"late{i}" for i in range(100)}
    for msg in sorted(late):
        after.xadd("orders", {"msg": msg})
    wait_until(
        lambda: processed() >= produced | late,
        40,
        message=lambda: f"missing {sorted((produced | late) - processed())[:10]}\n{log()}",
    )
    assert consumer_process.poll() is None, f"the consumer exited:\n{log()}"
    wait_until(lambda: not after.xpending("orders", "g")["pending"], 20, message=log)
