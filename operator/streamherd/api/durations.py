"""Kubernetes-style durations (``250ms``, ``2s``, ``5m``, ``1h30m``): parsed and validated here only.

The CRD keeps the text; code works with seconds. The same pattern is enforced by the CRD
schema at apply time and by pydantic when the operator reads a spec.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Go's time.ParseDuration grammar without a sign and without the sub-millisecond units:
# nobody configures a poll interval in microseconds, and a leading "-" is always a mistake.
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
DURATION_MAX_LENGTH = 32
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """A duration string that does not parse."""


def parse_seconds(text: str) -> float:
    """Seconds in a duration string; raises DurationError with a message fit for a user."""
    if len(text) > DURATION_MAX_LENGTH or not _WHOLE.fullmatch(text):
        raise DurationError(
            f"{text!r} is not a duration: use a number and a unit (ms, s, m, h), "
            "such as 250ms, 2s, 5m or 1h30m"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


@functools.total_ordering
class Duration:
    """A duration as written by the user (``text``) and its value in ``seconds``.

    Deliberately not a dataclass: pydantic would then encode defaults in the JSON schema
    as objects instead of through this type's own serializer.
    """

    __slots__ = ("seconds", "text")

    def __init__(self, text: str, seconds: float) -> None:
        self.text = text
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self.seconds == other.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)

    @classmethod
    def parse(cls, value: Duration | str) -> Duration:
        if isinstance(value, Duration):
            return value
        return cls(value, parse_seconds(value))

    def __str__(self) -> str:
        return self.text

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self.seconds < other.seconds

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Duration:
            if isinstance(value, Duration):
                return value
            if not isinstance(value, str):
                raise PydanticCustomError("duration_type", "must be a string such as 2s, 5m or 24h")
            try:
                return cls.parse(value)
            except DurationError as exc:
                raise PydanticCustomError("duration_format", str(exc)) from None

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH}


def duration(text: str) -> Duration:
    """A Duration literal, for defaults in the models."""
    return Duration.parse(text)
