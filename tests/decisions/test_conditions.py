from datetime import UTC, datetime, timedelta

from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import (
    Verdict,
    apply_verdicts,
    status_patch,
    transition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = apply_verdicts([], [Verdict.ready("ok")], generation=1, now=T0)
    same = apply_verdicts(first, [Verdict.ready("still ok, other words")], generation=2, now=T1)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["message"] == "still ok, other words" and same[0]["observedGeneration"] == 2
    flipped = apply_verdicts(
        same, [Verdict.not_ready(Reason.REDIS_UNAVAILABLE, "down")], generation=2, now=T1
    )
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert (flipped[0]["status"], flipped[0]["reason"]) == ("False", "RedisUnavailable")


def test_other_conditions_are_kept_and_ready_comes_first() -> None:
    paused = Verdict(ConditionType.PAUSED, ConditionStatus.TRUE, Reason.PAUSED, "")
    both = apply_verdicts(
        [], [paused, Verdict.not_ready(Reason.PAUSED, "paused")], generation=1, now=T0
    )
    assert [c["type"] for c in both] == ["Ready", "Paused"]
    later = apply_verdicts(both, [Verdict.ready()], generation=1, now=T1)
    assert [c["type"] for c in later] == ["Ready", "Paused"]


def test_an_event_is_due_on_a_change_of_status_or_reason_only() -> None:
    ok = {"conditions": apply_verdicts([], [Verdict.ready("a")], generation=1, now=T0)}
    reworded = {
        "conditions": apply_verdicts(ok["conditions"], [Verdict.ready("b")], generation=1, now=T1)
    }
    down = {
        "conditions": apply_verdicts(
            ok["conditions"],
            [Verdict.not_ready(Reason.REDIS_UNAVAILABLE, "x")],
            generation=1,
            now=T1,
        )
    }
    auth = {
        "conditions": apply_verdicts(
            down["conditions"],
            [Verdict.not_ready(Reason.AUTHENTICATION_FAILED, "x")],
            generation=1,
            now=T1,
        )
    }
    assert transition(None, ok) is not None
    assert transition(ok, reworded) is None
    assert transition(ok, down) is not None
    assert transition(down, auth) is not None


def test_status_patch_carries_only_changes_and_leaves_foreign_fields_alone() -> None:
    current = {"pending": 3, "lag": 5, "replicas": 2}
    assert status_patch(current, {"pending": 3, "lag": 5}) is None
    assert status_patch(current, {"pending": 4, "lag": 5}) == {"pending": 4}
    assert status_patch(current, {"lag": None}) == {"lag": None}, "None removes an owned field"
    assert status_patch(current, {"other": None}) is None, "absent and None are the same"


def test_a_condition_message_is_bounded_by_the_schema_limit() -> None:
    from streamherd.decisions.conditions import MAX_MESSAGE, Verdict, apply_verdicts

    verdict = Verdict.not_ready(Reason.INVALID_SPEC, "y" * (1 << 20))
    (ready,) = apply_verdicts([], [verdict], generation=1, now=datetime.now(UTC))
    assert len(ready["message"]) == MAX_MESSAGE
    assert ready["message"].endswith("more characters)")
