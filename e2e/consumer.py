"""A real Redis Streams consumer for tests, benchmarks and the demo.

Configured the way streamherd configures the Deployments it owns:
  STREAMHERD_REDIS_URL     redis:// URL (STREAMHERD_REDIS_USERNAME / _PASSWORD optional)
  STREAMHERD_STREAM        stream key
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
Exits 0 on SIGTERM after finishing the message at hand, like a well-behaved container.
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
    stream, group = os.environ["STREAMHERD_STREAM"], os.environ["STREAMHERD_GROUP"]
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
        if history and cursor is None and time.monotonic() >= next_history:
            cursor, next_history = "0", time.monotonic() + history_every
        reply = client.xreadgroup(
            group, me, {stream: cursor or ">"}, count=batch, block=None if cursor else 200
        )
        entries = reply[0][1] if reply else []
        if cursor is not None:
            cursor = entries[-1][0] if entries else None  # walked to the end: back to ">"
        for entry_id, fields in entries:
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
            if stopping:
                break
    print(f"{me} stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
