"""A RedisStream over a key pattern (one stream per call) and the groups on it."""

from __future__ import annotations

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane


def test_a_group_reaches_every_matching_stream_and_misses_no_early_event(harness: Harness) -> None:
    h = harness
    h.stream("calls", key=None, keyPattern="conv:*")
    h.group("brain", stream="calls")  # startId "$": everything since this resource exists
    h.r.set("conv:meta", "not a stream")
    h.start()
    h.wait_ready("ConsumerGroup", "brain")
    # A call that starts now writes before the operator has even discovered its stream.
    for call in ("conv:1", "conv:2", "conv:3"):
        for turn in range(3):
            h.r.xadd(call, {"turn": turn})
    status = h.wait_status(
        "ConsumerGroup", "brain", lambda s: s.get("streams") == 3 and s.get("lag") == 9
    )
    assert status["stream"] == "conv:*" and status["lagExactness"] == "Exact"
    for call in ("conv:1", "conv:2", "conv:3"):
        assert h.groups_in_redis(call)["brain"]["lag"] == 3, "no event of the call was skipped"
    stream = h.wait_status("RedisStream", "calls", lambda s: s.get("matchedKeys") == 3)
    assert stream["length"] == 9 and stream["groups"] == 1


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_dead_letter_streams_are_never_treated_as_sources(harness: Harness) -> None:
    h = harness
    h.stream("calls", key=None, keyPattern="conv:*")
    h.group("brain", stream="calls")
    h.r.xadd("conv:1", {"turn": 0})
    h.r.xadd("conv:1:dlq", {"origin": "x"})
    h.r.xadd("{conv:2}:dlq", {"origin": "y"})
    h.start()
    wait_until(lambda: h.status("ConsumerGroup", "brain").get("streams") == 1, 20)
    assert h.groups_in_redis("conv:1:dlq") == {}, "no group is created on a dead-letter stream"
    assert h.status("RedisStream", "calls").get("matchedKeys") == 1


def test_deleting_a_pattern_cleans_up_its_streams_and_keeps_their_dead_letters(
    harness: Harness,
) -> None:
    """Deletion names a pattern's streams as the poller does: dead-letter streams are not
    among them, so deleting the resources neither destroys a group there nor the dead
    letters themselves. A ConsumerGroup deleted (Delete) destroys its group on the streams;
    the RedisStream deleted (Delete) removes the streams that carry one of its groups (so
    deleted first, or with its groups kept: a stream left with none of our groups is not
    known to be ours, see tests/retention/test_operator.py)."""
    h = harness
    h.stream("calls", key=None, keyPattern="conv:*", deletionPolicy="Delete")
    h.group("brain", stream="calls", startId="0", deletionPolicy="Delete")
    h.group("crm", stream="calls", startId="0", deletionPolicy="Delete")
    for call in ("conv:1", "conv:2"):
        h.r.xadd(call, {"turn": 0})
    h.r.xadd("conv:1:dlq", {"origin": "x"})
    h.r.xgroup_create("conv:1:dlq", "brain", "0")  # a person reading the dead letters
    h.start()
    wait_until(lambda: h.status("ConsumerGroup", "crm").get("streams") == 2, 20)
    h.wait_status("RedisStream", "calls", lambda s: s.get("managedGroups") == ["brain", "crm"])
    h.delete("ConsumerGroup", "crm")
    h.wait_gone("ConsumerGroup", "crm")
    assert set(h.groups_in_redis("conv:1")) == {"brain"} == set(h.groups_in_redis("conv:2"))
    h.delete("RedisStream", "calls")
    h.wait_gone("RedisStream", "calls")
    assert h.r.exists("conv:1", "conv:2") == 0, "deletionPolicy Delete removed the streams"
    assert h.r.xlen("conv:1:dlq") == 1, "the dead letters are kept"
    h.delete("ConsumerGroup", "brain")
    h.wait_gone("ConsumerGroup", "brain")
    assert set(h.groups_in_redis("conv:1:dlq")) == {"brain"}, "no group destroyed there"
    # Each daemon ended on its own when kopf stopped it: cancelled instead, kopf would have
    # re-checked each deletion only 10 s later.
    assert "is cancelled" not in h.logs(), h.logs()[-3000:]
