"""How old an entry is, from its id: lag in seconds and the oldest pending entry's age.

An automatic id (``XADD key *``) is ``<ms>-<seq>`` with ``ms`` the Redis server's clock when
the entry was added, so Redis's clock now (``TIME``, read in the same script) minus ``ms`` is
the entry's age, on one clock, whatever the operator's. But a producer may choose the id
(``XADD key 5-1``, a sequence number, an id copied from another system): then ``ms`` is not a
time, and the difference would be a confident wrong age (55 years for ``5-1``). Redis keeps
no creation time for a stream, so the plausible range is what an automatic id can carry:

- not before ``EARLIEST_ID_MS`` (2018-10-01: streams first shipped in Redis 5.0, October
  2018; no automatic id is older);
- not after Redis's clock by more than ``FUTURE_TOLERANCE_MS``: Redis keeps ids increasing,
  so after its clock steps back (NTP) new ids carry the last time until it catches up: a
  little in the future is age 0, more is an id set by hand (or a clock far off).

Outside that range the age is unknown, never a guess (and never 0: that would hide a backlog).
"""

from __future__ import annotations

from streamherd.keys import parse_id

EARLIEST_ID_MS = 1_538_352_000_000
"""2018-10-01T00:00:00Z: no automatic stream id carries an earlier time."""
FUTURE_TOLERANCE_MS = 1_000
"""An id at most this far ahead of Redis's clock is taken as just added (a clock step back)."""


def entry_age_ms(entry_id: str, now_ms: int) -> int | None:
    """How long ago the entry ``entry_id`` was added, on Redis's clock ``now_ms``; None when
    the id's time is not a plausible time (an id chosen by the producer)."""
    added_ms = parse_id(entry_id)[0]
    if added_ms < EARLIEST_ID_MS or added_ms > now_ms + FUTURE_TOLERANCE_MS:
        return None
    return max(0, now_ms - added_ms)
