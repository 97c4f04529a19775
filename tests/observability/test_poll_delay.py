"""The poll-delay metric (streamherd_group_poll_delay_ratio) through the real operator: how old
a group's measurement had got when its next one reached its loop, in pollIntervals. What
bench-load's max_poll_delay_ratio reads: a loop that falls behind its poller shows in it, a
paused group (nothing to measure) does not."""

from __future__ import annotations

import time

from e2e.cluster.processes import wait_until
from tests.harness import Harness

DELAY = "streamherd_group_poll_delay_ratio"
PAUSED = "streamherd.io/paused"


def samples(h: Harness) -> tuple[float, float]:
    """(samples so far, samples within 2 intervals)."""
    return h.metric(DELAY + "_count"), h.metric(DELAY + "_bucket", le="2.0")


def test_each_poll_a_group_uses_is_a_sample_and_a_pause_is_not_a_delay(harness: Harness) -> None:
    h = harness
    h.stream()
    h.group("fulfilment", autoscaling={"enabled": False, "pollInterval": "1s"})
    h.start()
    h.wait_ready("ConsumerGroup", "fulfilment")
    wait_until(lambda: samples(h)[0] >= 2, 20, interval=0.2, message=h.logs)
    count, on_time = samples(h)
    assert on_time == count, f"{count - on_time} of {count} samples over 2 intervals"
    h.patch("ConsumerGroup", "fulfilment", {"metadata": {"annotations": {PAUSED: "true"}}})
    h.wait_status(
        "ConsumerGroup",
        "fulfilment",
        lambda s: any(c["type"] == "Paused" for c in s.get("conditions") or []),
    )
    paused_at, before = time.monotonic(), samples(h)[0]
    # Paused for three intervals: the loop measures nothing, and says so.
    wait_until(lambda: time.monotonic() - paused_at >= 3, 10, interval=0.2)
    assert samples(h)[0] == before, "a paused group used a poll"
    h.patch("ConsumerGroup", "fulfilment", {"metadata": {"annotations": {PAUSED: None}}})
    wait_until(lambda: samples(h)[0] >= before + 2, 20, interval=0.2, message=h.logs)
    count, on_time = samples(h)
    assert on_time == count, f"the pause counted as a delay: {count - on_time} over 2 intervals"
