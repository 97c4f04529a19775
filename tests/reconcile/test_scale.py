"""200 ConsumerGroups on one endpoint cost one poll per interval, not 200."""

from __future__ import annotations

import time

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane

STREAMS, GROUPS_PER_STREAM = 20, 10


@pytest.mark.e2e_variants("control-plane")
def test_two_hundred_groups_share_one_poll_and_stay_current(harness: Harness) -> None:
    h = harness
    for s in range(STREAMS):
        h.stream(f"s{s}", key=f"s{s}")
        for g in range(GROUPS_PER_STREAM):
            # No janitor: its passes run scripts too (and have their own benchmark); this
            # test counts the poll's.
            h.group(
                f"s{s}-g{g}",
                stream=f"s{s}",
                groupName=f"g{g}",
                startId="0",
                recovery={"enabled": False},
            )
    names = [(f"s{s}-g{g}", s) for s in range(STREAMS) for g in range(GROUPS_PER_STREAM)]
    # This counts polls, not writes: the client's write budget (15/s by default, which makes
    # 200 groups' new numbers take ~13 s to be written) is lifted out of the way here.
    h.start("--api-write-qps", "1000", "--api-write-burst", "1000")
    wait_until(
        lambda: all(h.ready("ConsumerGroup", name).get("status") == "True" for name, _ in names),
        90,
        interval=0.5,
        message=lambda: f"not all Ready:\n{h.logs()[-2000:]}",
    )

    # Every group is measured by the endpoint's shared poll: one script call per 10 streams.
    h.r.config_resetstat()
    window = 6.0
    time.sleep(window)
    calls = h.r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    polls_at_most = window / 2.0 + 2  # default pollInterval 2s, plus a poll on each side
    assert calls <= polls_at_most * (STREAMS / 10), f"{calls} script calls in {window}s"
    assert calls >= 2 * (STREAMS / 10), "it did poll"

    # New work shows up in every group's status within a few polls of the endpoint (counted,
    # not timed: on a loaded machine the polls themselves are what may be late).
    polls_before = h.metric("streamherd_polls_total")
    for s in range(STREAMS):
        for _ in range(s + 1):
            h.r.xadd(f"s{s}", {"x": 1})
    wait_until(
        lambda: all(h.status("ConsumerGroup", name).get("lag") == s + 1 for name, s in names),
        60,
        interval=0.2,
        message="not every group saw its new entries",
    )
    polls = h.metric("streamherd_polls_total") - polls_before
    assert polls <= 4, f"{polls:.0f} polls before all 200 groups showed their new entries"
