"""A real Redis Streams consumer for tests, benchmarks and the demo: a user of the consumer
SDK (``streamherd.consumer``), configured by the contract's environment as streamherd
configures the Deployments it owns:
  STREAMHERD_REDIS_URL     redis:// URL (STREAMHERD_REDIS_USERNAME / _PASSWORD optional)
  STREAMHERD_REDIS_MODE    Standalone (the default) or Cluster (the URL names any node)
  STREAMHERD_STREAM        stream key, or
  STREAMHERD_STREAM_PATTERN  a glob over stream keys (one stream per call): the SDK follows
                           every matching stream (a scan at start, then the registry)
  STREAMHERD_GROUP         consumer group
  STREAMHERD_CONSUMER      consumer name (defaults to POD_NAME, then the host name)
Behaviour knobs (all optional):
  WORK_MS=20          time spent per message
  BATCH=10            entries per read (the SDK bounds a read's total over many streams)
  MODE=new            "new": the SDK reading only ">" (never its own history: entries
                      claimed to it stay there);
                      "history": the SDK as the contract wants it: its own pending entries
                      first, again every HISTORY_EVERY_S=1 seconds, then ">" - so entries
                      claimed to it get processed (the Claim strategy needs this);
                      "plain": not the SDK - the seed article's loop, unchanged: XREADGROUP
                      ">", process, XACK, leave a failure pending (one stream only).
                      None of them retries its own failures: the janitor decides about those.
  POISON_FIELD=poison a message with this field set is never acknowledged (it "fails")
  CRASH_AFTER=0       exit(1) after reading that many entries, without acking the last batch
  PROCESSED_LOG=0     1: also RPUSH "<stream> <origin id> <consumer> <entry id>" to
                      "processed-log:<group>" for every processed message (who did what)
Every processed message's "msg" field (or its origin id) is added to the set
"processed:<group>", so a test can check that nothing was lost.
Exits 0 on SIGTERM after finishing the batch at hand, like a well-behaved consumer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import redis

from streamherd.consumer import Consumer, Entry, Settings, StreamClient


class Failed(Exception):
    """The message could not be processed (it carries the poison field)."""


def main() -> int:
    settings = Settings.from_env()
    work = float(os.environ.get("WORK_MS", "20")) / 1000
    batch = int(os.environ.get("BATCH", "10"))
    mode = os.environ.get("MODE", "new")
    poison = os.environ.get("POISON_FIELD", "poison")
    crash_after = int(os.environ.get("CRASH_AFTER", "0"))
    log = os.environ.get("PROCESSED_LOG", "0") == "1"
    me, group = settings.consumer, settings.group
    where = settings.stream or settings.pattern
    print(f"{me} consuming {where}/{group} mode={mode}", flush=True)
    if mode == "plain":
        return plain_loop(settings, work, batch, poison, crash_after)
    client = StreamClient.from_settings(settings)
    seen = 0

    async def handle(entry: Entry) -> None:
        nonlocal seen
        seen += 1
        if crash_after and seen >= crash_after:
            print(f"{me} crashing at {entry.id}", flush=True)
            os._exit(1)
        await asyncio.sleep(work)
        if entry.fields.get(poison):
            print(f"{me} failed {entry.id}", flush=True)
            raise Failed(entry.id)
        pipe = client.redis.pipeline(transaction=False)
        pipe.sadd(f"processed:{group}", entry.fields.get("msg", entry.origin_id))
        if log:
            pipe.rpush(
                f"processed-log:{group}", f"{entry.stream} {entry.origin_id} {me} {entry.id}"
            )
        await pipe.execute()

    history = float(os.environ.get("HISTORY_EVERY_S", "1")) if mode == "history" else None
    consumer = Consumer(
        client,
        stream=settings.stream,
        pattern=settings.pattern,
        handler=handle,
        batch=batch,
        history_interval=history,
    )
    code = consumer.run_forever()
    print(f"{me} stopping", flush=True)
    return code


def plain_loop(settings: Settings, work: float, batch: int, poison: str, crash_after: int) -> int:
    """The seed article's consumer: read new entries, process, acknowledge; a failure stays
    pending. It knows nothing of streamherd (it even processes copies meant for other groups)."""
    if settings.stream is None:
        raise SystemExit("MODE=plain reads one stream: set STREAMHERD_STREAM")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    connect = redis.RedisCluster.from_url if settings.cluster else redis.Redis.from_url
    r = connect(
        settings.redis_url,
        username=settings.username,
        password=settings.password,
        decode_responses=True,
    )
    stream, group, me, seen = settings.stream, settings.group, settings.consumer, 0
    while not stopping:
        try:
            reply = r.xreadgroup(group, me, {stream: ">"}, count=batch, block=200)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            time.sleep(0.2)  # the operator creates the group: wait for it
            continue
        for _, entries in reply or []:
            for entry_id, fields in entries:
                seen += 1
                if crash_after and seen >= crash_after:
                    print(f"{me} crashing at {entry_id}", flush=True)
                    os._exit(1)
                time.sleep(work)
                if fields.get(poison):
                    print(f"{me} failed {entry_id}", flush=True)
                    continue
                r.sadd(f"processed:{group}", fields.get("msg", entry_id))
                r.xack(stream, group, entry_id)
    print(f"{me} stopping", flush=True)
    return 0


IMAGE = "streamherd-e2e-consumer:local"
"""The simulated kubelet runs the command and ignores the image; a real cluster needs an
image with python, redis-py and this repository."""


def deployment(
    name: str,
    *,
    redis_url: str,
    group: str,
    mode: str = "Standalone",
    stream: str | None = None,
    pattern: str | None = None,
    replicas: int = 0,
    image: str = IMAGE,
    namespace: str = "default",
    grace_seconds: int = 2,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    """A Deployment running this consumer, configured as streamherd configures the ones it
    owns (the consumer is named after its pod through the downward API)."""
    variables = [
        {"name": "STREAMHERD_REDIS_URL", "value": redis_url},
        {"name": "STREAMHERD_REDIS_MODE", "value": mode},
        {
            "name": "STREAMHERD_STREAM_PATTERN" if pattern else "STREAMHERD_STREAM",
            "value": pattern or stream,
        },
        {"name": "STREAMHERD_GROUP", "value": group},
        {"name": "STREAMHERD_CONSUMER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": k, "value": v} for k, v in (env or {}).items()),
    ]
    container = {
        "name": "consumer",
        "image": image,
        "command": ["python", "-m", "e2e.consumer"],
        "env": variables,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": grace_seconds, "containers": [container]},
            },
        },
    }


if __name__ == "__main__":
    sys.exit(main())
