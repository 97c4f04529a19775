"""Stream key names the operator and the consumer SDK agree on: pure, no I/O.

- Pattern matching with Redis's own glob rules (``SCAN MATCH`` / ``KEYS``), so a key the
  operator follows is exactly a key Redis would list for the pattern.
- Auxiliary keys streamherd writes next to a stream (dead-letter streams, and any other kind
  added later): never sources of a pattern, never deleted as a "call stream".
- Redis Cluster hash slots (``hash_slot``, ``hash_tag``): which keys one script may touch.
- The registry of new streams: a capped stream every publisher that uses the SDK appends a
  key's name to the first time it writes to that key, so the operator and pattern consumers
  learn new call streams in O(new keys), not by SCAN over the whole keyspace.
- Entry ids, compared as numbers (the Lua scripts compare them as digit strings).
"""

from __future__ import annotations

from binascii import crc_hqx

DEAD_LETTER_SUFFIX = ":dlq"
"""``<key>:dlq`` (or ``{<key>}:dlq`` on Redis Cluster): where a stream's poison entries go."""

AUXILIARY_SUFFIXES: tuple[str, ...] = (DEAD_LETTER_SUFFIX,)
"""Suffixes of the keys streamherd keeps beside a stream. Extend here, nowhere else."""

REGISTRY_KEY = "streamherd:streams"
"""The registry of new streams (a Redis stream). Its entries carry ``REGISTRY_FIELD``."""
REGISTRY_FIELD = "key"
REGISTRY_MAX_LENGTH = 100_000
ANNOUNCED_KEY_GRACE = 30.0
"""Seconds a key announced in the registry (or matched by a pattern) but holding no stream yet
is still checked before it is forgotten, by the SDK's consumers and the operator's discovery
alike: long enough for a publisher that announces a key before writing to it, short enough
that the keys of deleted calls cost memory only for a while."""

OWNERS_PREFIX = "streamherd:owners:"
"""Who manages a consumer group of a given name on this Redis: a hash per group name
(``owners_key``), one field per claiming ConsumerGroup (its uid). See decisions.ownership."""


def owners_key(group: str) -> str:
    return OWNERS_PREFIX + group


"""Approximate cap (``MAXLEN ~``) on the registry: readers keep their own position."""


CLUSTER_SLOTS = 16384


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes when it has one: between the first "{" and
    the first "}" after it, if not empty (the cluster spec's rule)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


def hash_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key``: CRC16 (XMODEM) of its hash tag, or of the whole
    key, modulo 16384. Keys of one script call must share it."""
    tag = hash_tag(key)
    return crc_hqx((key if tag is None else tag).encode(), 0) % CLUSTER_SLOTS


def is_auxiliary(key: str) -> bool:
    """A key streamherd writes beside a stream (or its registry): never a source."""
    return key == REGISTRY_KEY or key.startswith(OWNERS_PREFIX) or key.endswith(AUXILIARY_SUFFIXES)


def glob_match(pattern: str, key: str) -> bool:
    """Redis's ``stringmatchlen`` (case-sensitive): ``*``, ``?``, ``[abc]``, ``[^a-z]``,
    and ``\\`` escaping the next character."""
    return _match(pattern, 0, key, 0)


def _match(p: str, i: int, s: str, j: int) -> bool:
    while i < len(p):
        c = p[i]
        if c == "*":
            while i + 1 < len(p) and p[i + 1] == "*":
                i += 1
            if i + 1 == len(p):
                return True
            return any(_match(p, i + 1, s, k) for k in range(j, len(s) + 1))
        if j >= len(s):
            return False
        if c == "?":
            i, j = i + 1, j + 1
            continue
        if c == "[":
            i, matched = _bracket(p, i + 1, s[j])
            if not matched:
                return False
            j += 1
            continue
        if c == "\\" and i + 1 < len(p):
            i += 1
            c = p[i]
        if c != s[j]:
            return False
        i, j = i + 1, j + 1
    return j == len(s)


def _bracket(p: str, i: int, ch: str) -> tuple[int, bool]:
    """Match ``ch`` against the class starting at ``p[i]`` (after "["); returns the index
    after the closing "]" and whether it matched. An unclosed class runs to the end, as in Redis."""
    negate = i < len(p) and p[i] == "^"
    if negate:
        i += 1
    matched = False
    while i < len(p) and p[i] != "]":
        if p[i] == "\\" and i + 1 < len(p):
            i += 1
            matched |= p[i] == ch
        elif i + 2 < len(p) and p[i + 1] == "-":
            low, high = sorted((p[i], p[i + 2]))
            matched |= low <= ch <= high
            i += 2
        else:
            matched |= p[i] == ch
        i += 1
    return i + 1, matched != negate


def literal_prefix(pattern: str) -> str:
    """The part of a pattern before its first special character: what every match starts with."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c in "*?[":
            break
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        out.append(c)
        i += 1
    return "".join(out)


def parse_id(entry_id: str) -> tuple[int, int]:
    """An entry id as a comparable pair; "5" means "5-0". The one place Python compares ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
