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


def test_the_oldest_pending_age_is_from_the_id_on_redis_clock() -> None:
    one = StreamState(
        "conv:1",
        StreamStatus.OK,
        length=3,
        groups={"g": GroupState("g", 1, 2, 5, 0, "7000-3", True)},
        server_time_ms=10_000,
    )
    two = StreamState(
        "conv:2",
        StreamStatus.OK,
        length=3,
        groups={"g": GroupState("g", 1, 1, 5, 0, "9500-0", True)},
        server_time_ms=10_100,
    )
    totals = group_totals(observed(one, two), ["conv:1", "conv:2"], "g")
    assert totals.oldest_pending_age_ms == 3000, "the oldest entry: added 3 s ago"
