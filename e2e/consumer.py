"""A real Redis Streams consumer for tests, benchmarks and the demo.

Configured the way streamherd configures the Deployments it owns:
  STREAMHERD_REDIS_URL     redis:// URL (STREAMHERD_REDIS_USERNAME / _PASSWORD optional)
  STREAMHERD_STREAM        stream key, or
  STREAMHERD_STREAM_PATTERN  a glob over stream keys (one stream per call): the consumer
                           rediscovers matching streams every second and reads them all
  STREAMHERD_GROUP         consumer group
  STREAMHERD_CONSUMER      consumer name (defaults to POD_NAME, then the host name)
Behaviour knobs (all optional):
  WORK_MS=20          time spent per message
  BATCH=10            entries per XREADGROUP
  MODE=new            "new": read only ">" (never sees entries claimed to it);
                      "history": also walk its own pending entries (XREADGROUP from 0),
                      again every HISTORY_EVERY_S=1 seconds, so entries claimed to it get
                      processed - the consumer contract the Claim recovery strategy needs.
                      It never retries its own failures: the janitor decides about those.
  POISON_FIELD=poison a message with this field set is never acknowledged (it "fails")
  CRASH_AFTER=0       exit(1) after reading that many entries, without acking the last batch
Every processed message's "msg" field (or its id) is added to the set
"processed:<group>", so a test can check that nothing was lost.
Exits 0 on SIGTERM after finishing the batch at hand, like a well-behaved consumer.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import redis

stopping = False


def _stop(*_: object) -> None:
    global stopping
    stopping = True


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    client = redis.Redis.from_url(
        os.environ["STREAMHERD_REDIS_URL"],
        username=os.environ.get("STREAMHERD_REDIS_USERNAME") or None,
        password=os.environ.get("STREAMHERD_REDIS_PASSWORD") or None,
        decode_responses=True,
    )
    group = os.environ["STREAMHERD_GROUP"]
    pattern = os.environ.get("STREAMHERD_STREAM_PATTERN")
    stream = os.environ.get("STREAMHERD_STREAM", pattern or "")
    streams = Streams(client, group, stream, pattern)
    me = os.environ.get("STREAMHERD_CONSUMER") or os.environ.get("POD_NAME") or socket.gethostname()
    work = float(os.environ.get("WORK_MS", "20")) / 1000
    batch = int(os.environ.get("BATCH", "10"))
    history = os.environ.get("MODE", "new") == "history"
    poison = os.environ.get("POISON_FIELD", "poison")
    crash_after = int(os.environ.get("CRASH_AFTER", "0"))
    history_every = float(os.environ.get("HISTORY_EVERY_S", "1"))
    seen = 0
    failed: set[str] = set()
    cursor = "0" if history else None  # position in our own PEL, None when not walking it
    next_history = time.monotonic() + history_every
    print(f"{me} consuming {stream}/{group} mode={'history' if history else 'new'}", flush=True)
    while not stopping:
        keys = streams.current()
        if not keys:
            time.sleep(0.2)
            continue
        if history and cursor is None and time.monotonic() >= next_history:
            cursor, next_history = "0", time.monotonic() + history_every
        try:
            reply = client.xreadgroup(
                group,
                me,
                dict.fromkeys(keys, cursor or ">"),
                # COUNT is per stream: over many streams, keep a read's total near BATCH, or
                # one read takes longer than minIdle to work through (and goes stale).
                count=max(1, batch // len(keys)),
                block=None if cursor else 200,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            streams.missing_group()  # a new stream the operator has not reached yet
            continue
        batch_entries = [(key, e) for key, entries in reply or [] for e in entries]
        if cursor is not None:  # walked to the end of our own PEL: back to ">"
            cursor = batch_entries[-1][1][0] if batch_entries and len(keys) == 1 else None
        for key, (entry_id, fields) in batch_entries:
            stream = key
            if entry_id in failed:
                continue
            if not fields:  # a deleted entry still in our PEL: nothing to process
                client.xack(stream, group, entry_id)
                continue
            seen += 1
            if crash_after and seen >= crash_after:
                print(f"{me} crashing at {entry_id}", flush=True)
                os._exit(1)
            time.sleep(work)
            if fields.get(poison):
                print(f"{me} failed {entry_id}", flush=True)
                failed.add(entry_id)
                continue
            client.sadd(f"processed:{group}", fields.get("msg", entry_id))
            client.xack(stream, group, entry_id)
            # On SIGTERM it still finishes the batch it has read: those entries count as
            # delivered, and leaving them would spend their delivery budget for nothing.
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


class Streams:
    """The stream(s) to read: one key, or every stream matching a pattern (rediscovered
    every second; streams whose group does not exist yet are left out until it does)."""

    def __init__(self, client: redis.Redis, group: str, key: str, pattern: str | None) -> None:
        self.client, self.group, self.key, self.pattern = client, group, key, pattern
        self.keys: list[str] = [] if pattern else [key]
        self.refreshed = 0.0

    def current(self) -> list[str]:
        if self.pattern and time.monotonic() - self.refreshed > 1.0:
            found = sorted(self.client.scan_iter(match=self.pattern, count=1000, _type="stream"))
            self.keys = [k for k in found if self._has_group(k)]
            self.refreshed = time.monotonic()
        return self.keys

    def missing_group(self) -> None:
        self.refreshed = 0.0 if self.pattern else self.refreshed
        if not self.pattern:
            time.sleep(0.2)  # the operator creates the group: wait for it

    def _has_group(self, key: str) -> bool:
        try:
            return any(g["name"] == self.group for g in self.client.xinfo_groups(key))
        except redis.ResponseError:
            return False


if __name__ == "__main__":
    sys.exit(main())
