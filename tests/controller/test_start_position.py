from streamherd.controller.groups import start_position


def test_a_pattern_starts_new_streams_at_the_resources_creation_time() -> None:
    assert start_position("$", pattern=True, created="2026-11-22T03:11:24Z") == "1795317084000-0"


def test_single_keys_and_explicit_starts_are_left_alone() -> None:
    assert start_position("$", pattern=False, created="2026-11-22T03:11:24Z") == "$"
    assert start_position("0", pattern=True, created="2026-11-22T03:11:24Z") == "0"
    assert (
        start_position("1700000000000-5", pattern=True, created="2026-11-22T03:11:24Z")
        == "1700000000000-5"
    )
