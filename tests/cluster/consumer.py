"""A minimal Redis Streams consumer, run by the simulated kubelet in test_kubelet.py.

Reads STREAM with XREADGROUP as consumer $POD_NAME of group GROUP, prints every entry and
acknowledges it. Exits 0 on SIGTERM (like a well-behaved container).
"""

from __future__ import annotations

import os
import signal
import sys

import redis

stopping = False


def stop(*_: object) -> None:
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
stream, group, me = os.environ["STREAM"], os.environ["GROUP"], os.environ["POD_NAME"]
try:
    client.xgroup_create(stream, group, id="0", mkstream=True)
except redis.ResponseError as exc:
    if "BUSYGROUP" not in str(exc):
        raise
print(f"{me} ready", flush=True)
while not stopping:
    for _, entries in client.xreadgroup(group, me, {stream: ">"}, count=10, block=100) or []:
        for entry_id, fields in entries:
            print(f"{me} got {entry_id} {fields['n']}", flush=True)
            client.xack(stream, group, entry_id)
print(f"{me} stopping", flush=True)
sys.exit(0)
