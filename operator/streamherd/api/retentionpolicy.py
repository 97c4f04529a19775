"""RetentionPolicy: how much history the streams that reference it keep."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field

from streamherd.api.base import ApiModel, Rule, at_least
from streamherd.api.durations import Duration, duration
from streamherd.api.status import StatusModel


class RetentionPolicySpec(ApiModel):
    """Desired retention. Streams opt in with spec.retentionPolicyRef."""

    rules = (
        Rule(
            cel=(
                "has(self.maxLength) || has(self.maxAge) || has(self.hardMaxLength)"
                " || has(self.deleteIdleStreamsAfter)"
            ),
            message=(
                "set at least one of maxLength, maxAge, hardMaxLength or deleteIdleStreamsAfter"
            ),
            check=lambda m: any(
                v is not None
                for v in (m.max_length, m.max_age, m.hard_max_length, m.delete_idle_streams_after)
            ),
        ),
        Rule(
            cel="!has(self.hardMaxLength) || !has(self.maxLength) || self.hardMaxLength >= self.maxLength",
            message="hardMaxLength must be at least maxLength",
            check=lambda m: (
                m.hard_max_length is None
                or m.max_length is None
                or m.hard_max_length >= m.max_length
            ),
        ),
    )

    max_length: Annotated[int | None, Field(ge=0)] = None
    """Keep at most this many entries (XTRIM MAXLEN)."""
    max_age: Annotated[Duration, at_least("1s")] | None = None
    """Keep entries younger than this (XTRIM MINID from the entry id's time)."""
    approximate: bool = True
    """Trim with ~: whole macro-nodes only, much cheaper; never trims more than asked."""
    respect_consumer_groups: bool = True
    """Never trim entries a consumer group has not yet read or acknowledged."""
    hard_max_length: Annotated[int | None, Field(ge=1)] = None
    """Emergency cap applied even when a stuck group holds history back."""
    delete_idle_streams_after: Annotated[Duration, at_least("1s")] | None = None
    """For key patterns (one stream per call): delete a stream that received nothing for this long once every group has read and acknowledged all of it (UNLINK). Set it above the longest pause within a call."""
    interval: Annotated[Duration, at_least("1s")] = duration("1m")
    """How often retention runs."""


class BlockedGroup(ApiModel):
    """A consumer group that holds retention back."""

    model_config = ConfigDict(extra="ignore")

    redis_stream: Annotated[str, Field(max_length=253)]
    """The RedisStream whose streams it holds back."""
    group: Annotated[str, Field(max_length=256)]
    """The consumer group in Redis."""
    streams: Annotated[int, Field(ge=0)]
    """Streams it holds back."""
    reasons: Annotated[list[str], Field(max_length=2)] = []
    """MaxAge (entries older than maxAge survive for it) and/or MaxLength (streams stay over maxLength for it)."""
    oldest_unconsumed_age_seconds: Annotated[float | None, Field(ge=0)] = None
    """Age of the oldest entry it has not consumed."""


class RetentionPolicyStatus(StatusModel):
    """Observed state of a RetentionPolicy."""

    streams: Annotated[int | None, Field(ge=0)] = None
    """Streams this policy applied to in its last complete pass."""
    redis_streams: Annotated[list[str], Field(max_length=256)] = []
    """RedisStreams that reference this policy."""
    trimmed_entries: Annotated[int | None, Field(ge=0)] = None
    """Entries trimmed (total)."""
    deleted_streams: Annotated[int | None, Field(ge=0)] = None
    """Idle streams deleted (total)."""
    unconsumed_dropped: Annotated[int | None, Field(ge=0)] = None
    """Entries hardMaxLength dropped that some group had not consumed (total)."""
    blocked_groups: Annotated[list[BlockedGroup], Field(max_length=16)] = []
    """Groups holding retention back, the most streams first."""
    last_run: datetime | None = None
    """When retention last ran."""
    last_run_seconds: Annotated[float | None, Field(ge=0)] = None
    """How long the last complete pass took."""
