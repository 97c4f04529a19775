from datetime import UTC, datetime

from streamherd.decisions.streams import stream_status
from streamherd.decisions.totals import group_totals
from streamherd.observations import (
    EndpointProblem,
    Exactness,
    GroupState,
    Observation,
    Reading,
    StreamState,
    StreamStatus,
)

CAP = 1000


def observed(*streams: StreamState, problem: EndpointProblem | None = None) -> Observation:
    return Observation(
        taken_at=0.0,
        wall_time=datetime.now(UTC),
        streams={s.key: s for s in streams},
        problem=problem,
        lag_count_cap=CAP,
    )


def stream(key: str, *groups: GroupState, length: int = 10) -> StreamState:
    return StreamState(key, StreamStatus.OK, length=length, groups={g.name: g for g in groups})


def g(
    name: str,
    pending: int,
    lag: int | None,
    consumers: int = 1,
    oldest: str | None = None,
    *,
    counted: int | None = None,
    at_tail: bool | None = None,
) -> GroupState:
    """A group as the gateway reports it: ``lag`` as Redis said (None: null)."""
    return GroupState(name, consumers, pending, 5, lag, oldest, True, counted, at_tail)


def test_sums_over_a_patterns_streams() -> None:
    obs = observed(
        stream("conv:1", g("brain", 2, 3, oldest="100-0")),
        stream("conv:2", g("brain", 1, 4, consumers=2, oldest="900-0")),
    )
    totals = group_totals(obs, ["conv:1", "conv:2"], "brain")
    assert (totals.pending, totals.lag, totals.consumers, totals.streams) == (
        3,
        Reading.exact(7),
        3,
        2,
    )
    assert totals.backlog == Reading.exact(10)


def test_unreadable_endpoint_is_unknown_never_zero() -> None:
    totals = group_totals(observed(problem=EndpointProblem.UNREACHABLE), ["orders"], "g")
    assert not totals.known and totals.pending is None and totals.backlog.value is None


def test_streams_without_the_group_make_the_lag_a_lower_bound() -> None:
    obs = observed(stream("conv:1", g("brain", 0, 3)), stream("conv:2"))
    totals = group_totals(obs, ["conv:1", "conv:2"], "brain")
    assert totals.missing_group_on == ("conv:2",)
    assert totals.lag == Reading(3, Exactness.LOWER_BOUND)


def test_a_total_over_partly_readable_streams_is_a_lower_bound() -> None:
    """One stream of a pattern unreadable: what the readable ones hold is only part of it,
    its pending included (issue 10: pending was reported as exact)."""
    broken = StreamState("conv:2", StreamStatus.ERROR, error="ERR something")
    obs = observed(stream("conv:1", g("brain", 2, 0)), broken)
    totals = group_totals(obs, ["conv:1", "conv:2"], "brain")
    assert totals.pending == 2 and totals.pending_exactness is Exactness.LOWER_BOUND
    assert totals.lag == Reading(0, Exactness.LOWER_BOUND)
    assert totals.backlog == Reading(2, Exactness.LOWER_BOUND)
    whole = group_totals(observed(stream("conv:1", g("brain", 2, 0))), ["conv:1"], "brain")
    assert whole.pending_exactness is Exactness.EXACT and whole.backlog == Reading.exact(2)
    # A stream without the group holds nothing pending for it: pending stays exact there.
    missing = group_totals(
        observed(stream("conv:1", g("brain", 2, 0)), stream("conv:2")),
        ["conv:1", "conv:2"],
        "brain",
    )
    assert missing.pending_exactness is Exactness.EXACT
    assert missing.backlog == Reading(2, Exactness.LOWER_BOUND), "its lag is not counted yet"


def test_weakest_exactness_wins_in_a_sum() -> None:
    obs = observed(
        stream("a", g("x", 0, None, counted=CAP)),
        stream("b", g("x", 0, 7, at_tail=True)),
    )
    assert group_totals(obs, ["a", "b"], "x").lag == Reading(1000, Exactness.LOWER_BOUND)


def test_missing_stream_is_reported_for_creation() -> None:
    obs = observed(StreamState("orders", StreamStatus.MISSING))
    totals = group_totals(obs, ["orders"], "g")
    assert totals.known and totals.missing_streams == ("orders",) and totals.streams == 0


def test_stream_status_single_key_missing_depends_on_create_if_missing() -> None:
    obs = observed(StreamState("orders", StreamStatus.MISSING))
    ready, fields = stream_status(
        obs,
        key="orders",
        pattern=None,
        keys=["orders"],
        discovery_complete=True,
        create_if_missing=True,
    )
    assert ready.status == "True" and fields["length"] == 0
    strict, _ = stream_status(
        obs,
        key="orders",
        pattern=None,
        keys=["orders"],
        discovery_complete=True,
        create_if_missing=False,
    )
    assert (strict.status, strict.reason) == ("False", "StreamNotFound")
    assert "createIfMissing" in strict.message


def test_stream_status_for_a_pattern_counts_matches() -> None:
    obs = observed(stream("conv:1", g("a", 0, 0), length=3), stream("conv:2", length=4))
    verdict, fields = stream_status(
        obs,
        key=None,
        pattern="conv:*",
        keys=["conv:1", "conv:2"],
        discovery_complete=False,
        create_if_missing=True,
    )
    assert fields["matchedKeys"] == 2 and fields["length"] == 7 and fields["groups"] == 1
    assert "discovery in progress" in verdict.message


def test_stream_status_maps_redis_problems_to_reasons() -> None:
    for problem, reason in [
        (EndpointProblem.UNREACHABLE, "RedisUnavailable"),
        (EndpointProblem.AUTH_FAILED, "AuthenticationFailed"),
        (EndpointProblem.TLS_FAILED, "TLSFailed"),
        (EndpointProblem.PERMISSION_DENIED, "PermissionDenied"),
    ]:
        verdict, fields = stream_status(
            observed(problem=problem),
            key="k",
            pattern=None,
            keys=["k"],
            discovery_complete=True,
            create_if_missing=True,
        )
        assert verdict.reason == reason and fields["length"] is None


NOW = 1_767_000_000_000
"""Redis's clock in these tests (ms): late 2025."""


def test_the_oldest_pending_age_is_from_the_id_on_redis_clock() -> None:
    one = StreamState(
        "conv:1",
        StreamStatus.OK,
        length=3,
        groups={"g": GroupState("g", 1, 2, 5, 0, f"{NOW - 3000}-3", True)},
        server_time_ms=NOW,
    )
    two = StreamState(
        "conv:2",
        StreamStatus.OK,
        length=3,
        groups={"g": GroupState("g", 1, 1, 5, 0, f"{NOW - 400}-0", True)},
        server_time_ms=NOW + 100,
    )
    totals = group_totals(observed(one, two), ["conv:1", "conv:2"], "g")
    assert totals.oldest_pending_age_ms == 3000, "the oldest entry: added 3 s ago"


def lagging(key: str, lag: int | None, first_unread: str | None, **facts: object) -> StreamState:
    state = GroupState("g", 1, 0, 5, lag, None, True, first_unread_id=first_unread, **facts)  # type: ignore[arg-type]
    return StreamState(key, StreamStatus.OK, length=10, groups={"g": state}, server_time_ms=NOW)


def test_lag_in_seconds_is_the_oldest_unread_entrys_age_over_every_stream() -> None:
    obs = observed(
        lagging("conv:1", 3, f"{NOW - 2500}-0"),
        lagging("conv:2", 1, f"{NOW - 700}-4"),
        lagging("conv:3", 0, None),  # at the tail: nothing looked up, nothing unread
    )
    totals = group_totals(obs, ["conv:1", "conv:2", "conv:3"], "g")
    assert totals.lag_age_ms == Reading.exact(2500)


def test_lag_in_seconds_is_zero_at_the_tail_even_when_7x_says_otherwise() -> None:
    stale = lagging("conv:1", 4, None, at_tail=True)  # a stale 7.x lag: nothing after the group
    assert group_totals(observed(stale), ["conv:1"], "g").lag_age_ms == Reading.exact(0)
    assert group_totals(observed(), [], "g").lag_age_ms == Reading.exact(0), "no streams yet"


def test_a_null_lag_still_has_an_age_from_the_counted_entries() -> None:
    counted = lagging("conv:1", None, f"{NOW - 1200}-0", counted_lag=7)
    assert group_totals(observed(counted), ["conv:1"], "g").lag_age_ms == Reading.exact(1200)


def test_an_id_that_is_not_a_time_gives_an_unknown_age_never_a_wrong_one() -> None:
    """XADD key 5-1: "5" is not a time; 55 years would be a confident wrong answer."""
    explicit = lagging("legacy", 2, "5-1")
    assert group_totals(observed(explicit), ["legacy"], "g").lag_age_ms == Reading.unknown()
    future = lagging("ahead", 2, f"{NOW + 3_600_000}-0")  # an hour ahead of Redis's clock
    assert group_totals(observed(future), ["ahead"], "g").lag_age_ms == Reading.unknown()
    # Over a pattern, the other streams still say something: at least that much.
    fine = lagging("conv:1", 1, f"{NOW - 900}-0")
    totals = group_totals(observed(explicit, fine), ["legacy", "conv:1"], "g")
    assert totals.lag_age_ms == Reading(900, Exactness.LOWER_BOUND)
    pending = StreamState(
        "legacy",
        StreamStatus.OK,
        length=3,
        groups={"g": GroupState("g", 1, 2, 5, 0, "5-1", True)},
        server_time_ms=NOW,
    )
    assert group_totals(observed(pending), ["legacy"], "g").oldest_pending_age_ms is None


def test_lag_in_seconds_over_partly_readable_streams_is_a_lower_bound() -> None:
    broken = StreamState("conv:2", StreamStatus.ERROR, error="ERR boom")
    fine = lagging("conv:1", 1, f"{NOW - 900}-0")
    totals = group_totals(observed(fine, broken), ["conv:1", "conv:2"], "g")
    assert totals.lag_age_ms == Reading(900, Exactness.LOWER_BOUND)
    without_group = stream("conv:3")
    totals = group_totals(observed(fine, without_group), ["conv:1", "conv:3"], "g")
    assert totals.lag_age_ms == Reading(900, Exactness.LOWER_BOUND), "the group is not there yet"
    unreachable = group_totals(observed(problem=EndpointProblem.UNREACHABLE), ["conv:1"], "g")
    assert unreachable.lag_age_ms == Reading.unknown()
