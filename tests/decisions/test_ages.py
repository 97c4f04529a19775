"""Ages from entry ids (decisions.ages): the id's time on Redis's clock, or unknown when the
id's time cannot be a time."""

from streamherd.decisions.ages import EARLIEST_ID_MS, FUTURE_TOLERANCE_MS, entry_age_ms

NOW = 1_767_000_000_000


def test_an_automatic_id_is_its_age_on_redis_clock() -> None:
    assert entry_age_ms(f"{NOW - 1234}-7", NOW) == 1234
    assert entry_age_ms(f"{NOW}", NOW) == 0


def test_an_id_a_little_ahead_is_just_added_after_a_clock_step_back() -> None:
    """Redis keeps ids increasing: after its clock steps back, new ids carry the last time."""
    assert entry_age_ms(f"{NOW + FUTURE_TOLERANCE_MS}-0", NOW) == 0


def test_ids_set_by_hand_are_not_times() -> None:
    assert entry_age_ms("5-1", NOW) is None, "XADD key 5-1"
    assert entry_age_ms("0-1", NOW) is None
    assert entry_age_ms(f"{EARLIEST_ID_MS - 1}-0", NOW) is None, "before streams existed"
    assert entry_age_ms(f"{EARLIEST_ID_MS}-0", NOW) == NOW - EARLIEST_ID_MS
    assert entry_age_ms(f"{NOW + FUTURE_TOLERANCE_MS + 1}-0", NOW) is None, "in the future"
    assert entry_age_ms("18446744073709551615-0", NOW) is None
