"""Ownership of a Redis group, recorded in Redis next to it (keys.owners_key): two
ConsumerGroups that reach one group, whether by a key and a key pattern that matches it or by
two host names for one server, never both manage it; a claim whose ConsumerGroup is gone does
not block the group. The second is Ready=False
GroupOwnedElsewhere naming the first, with a Warning Event; deleting the first releases its
claim (its record is gone from Redis) and the second takes over."""

from __future__ import annotations

import json

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

from streamherd.keys import owners_key


def claims(h: Harness, group: str) -> dict[str, dict[str, object]]:
    return {
        uid: json.loads(value)
        for uid, value in h.r.hgetall(owners_key(group)).items()
        if uid != "#seq"
    }


def test_a_key_and_a_pattern_that_matches_it_do_not_both_manage_the_group(
    harness: Harness,
) -> None:
    h = harness
    h.r.xadd("conv:1", {"n": 1})
    # A claim left behind by a ConsumerGroup that is gone (deleted while no operator ran):
    # stale, so the first claimant below releases it and manages the group.
    ghost = {"namespace": h.namespace, "name": "ghost", "kind": "key", "text": "conv:1", "seq": 1}
    h.r.hset(owners_key("agents"), mapping={"#seq": 1, "ghost-uid": json.dumps(ghost)})
    h.stream("call-one", key="conv:1")
    h.stream("calls", key=None, keyPattern="conv:*")
    one = h.group("one", stream="call-one", groupName="agents")
    h.start()
    h.wait_ready("ConsumerGroup", "one")
    assert "ghost-uid" not in claims(h, "agents")
    h.group("every", stream="calls", groupName="agents")
    waiting = h.wait_ready("ConsumerGroup", "every", "False", "GroupOwnedElsewhere")
    assert f"managed by {h.namespace}/one" in waiting["message"]
    assert one["metadata"]["uid"] in waiting["message"]
    wait_until(
        lambda: any(e[:2] == ("Warning", "GroupOwnedElsewhere") for e in h.events("every")),
        20,
    )
    recorded = claims(h, "agents")
    assert {c["name"] for c in recorded.values()} == {"one", "every"}
    assert recorded[one["metadata"]["uid"]]["kind"] == "key"

    h.delete("ConsumerGroup", "one")
    h.wait_gone("ConsumerGroup", "one")
    assert one["metadata"]["uid"] not in claims(h, "agents")  # released with the resource
    h.wait_ready("ConsumerGroup", "every", timeout=30)  # the next in line manages now
    h.delete("ConsumerGroup", "every")
    h.wait_gone("ConsumerGroup", "every")
    assert not h.r.exists(owners_key("agents"))  # the last claim gone: the record too


@pytest.mark.e2e_variants  # the suite has it at the Redis level (tests/gateway/test_ownership)
def test_one_redis_by_two_host_names_is_one_owner(harness: Harness) -> None:
    h = harness
    port = h.redis_server.port
    h.stream("by-ip", key="orders", redis={"url": f"redis://127.0.0.1:{port}"})
    h.stream("by-name", key="orders", redis={"url": f"redis://localhost:{port}"})
    h.group("ip", stream="by-ip", groupName="fulfilment")
    h.start()
    h.wait_ready("ConsumerGroup", "ip")
    h.group("name", stream="by-name", groupName="fulfilment")
    waiting = h.wait_ready("ConsumerGroup", "name", "False", "GroupOwnedElsewhere")
    assert f"managed by {h.namespace}/ip" in waiting["message"]
