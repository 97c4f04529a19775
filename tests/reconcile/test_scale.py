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
    # This counts polls, not writes: status numbers as on a real cluster (every 10 s, at most
    # 10 such writes a second in all; the metrics get them at every poll), and the client's
    # write budget (15/s) lifted: 200 conditions changing at once would otherwise hold each
    # loop ~13 s behind the rate limiter (issue 13: loops still wait on their own writes).
    h.start(
        "--status-interval",
        "10",
        "--status-writes-per-second",
        "10",
        "--api-write-qps",
        "1000",
        "--api-write-burst",
        "1000",
    )
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

    # New work shows up in every group's metrics within a few polls of the endpoint (counted,
    # not timed: on a loaded machine the polls themselves are what may be late), and in its
    # status within the status interval (stretched by the budget: 200 groups at 10 writes/s).
    polls_before = h.metric("streamherd_polls_total")
    for s in range(STREAMS):
        for _ in range(s + 1):
            h.r.xadd(f"s{s}", {"x": 1})

    def lags() -> dict[str, float]:
        out = {}
        for line in h.metrics().splitlines():
            if line.startswith("streamherd_group_lag{") and f'namespace="{h.namespace}"' in line:
                name = line.split('consumergroup="', 1)[1].split('"', 1)[0]
                out[name] = float(line.rsplit(" ", 1)[1])
        return out

    def all_seen() -> bool:
        got = lags()  # one scrape for all 200
        return all(got.get(name) == s + 1 for name, s in names)

    wait_until(
        all_seen,
        60,
        interval=0.2,
        message="not every group's metric saw its new entries",
    )
    polls = h.metric("streamherd_polls_total") - polls_before
    assert polls <= 4, f"{polls:.0f} polls before all 200 groups showed their new entries"
    wait_until(
        lambda: all(h.status("ConsumerGroup", name).get("lag") == s + 1 for name, s in names),
        90,
        interval=1.0,
        message="not every group's status saw its new entries",
    )
