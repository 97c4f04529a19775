"""Who manages a group, from the claims recorded in Redis (decisions.ownership)."""

from __future__ import annotations

from streamherd.decisions.ownership import overlaps, owner_elsewhere
from streamherd.observations import GroupClaim


def claim(uid: str, kind: str, text: str, seq: int) -> GroupClaim:
    return GroupClaim(uid=uid, namespace="ns", name=uid, kind=kind, text=text, seq=seq)


def test_the_first_recorded_of_overlapping_claims_manages() -> None:
    key = claim("a", "key", "conv:1", 1)
    pattern = claim("b", "pattern", "conv:*", 2)
    other_key = claim("c", "key", "orders", 3)
    claims = [key, pattern, other_key]
    assert owner_elsewhere(key, claims) is None
    assert owner_elsewhere(pattern, claims) == key  # conv:1 is one of conv:*'s streams
    assert owner_elsewhere(other_key, claims) is None  # nothing of the others' meets it
    # Released (deleted): the next in line manages.
    assert owner_elsewhere(pattern, [pattern, other_key]) is None


def test_a_key_claimed_after_a_pattern_that_matches_it_waits() -> None:
    pattern = claim("b", "pattern", "conv:*", 1)
    key = claim("a", "key", "conv:7", 2)
    assert owner_elsewhere(key, [pattern, key]) == pattern
    assert owner_elsewhere(pattern, [pattern, key]) is None


def test_two_patterns_meet_on_the_streams_they_both_match() -> None:
    first = claim("a", "pattern", "conv:*", 1)
    second = claim("b", "pattern", "conv:eu:*", 2)
    assert not overlaps(second, first, keys=())
    assert owner_elsewhere(second, [first, second], keys={"conv:eu:1"}) == first
