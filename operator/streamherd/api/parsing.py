"""Reading a resource's spec into its model, with errors a user can act on.

The API server normally rejects bad specs at apply time (the CRD's schema and CEL rules);
this is the operator's second line: it reports the same problems as ``Ready=False
InvalidSpec`` when a spec slips through (no CRD validation, an older CRD, a direct etcd
write) instead of crashing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """A spec that does not validate; ``problems`` are lines like ``spec.key: ...``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse(model: type[M], data: Mapping[str, Any] | None, where: str = "spec") -> M:
    """``data`` as ``model``. Anything that is not an object where one belongs (a number, a
    string, a list: what a schema-less CRD lets through) is a SpecError too, never a crash."""
    if data is not None and not isinstance(data, Mapping):
        kind = type(data).__name__
        raise SpecError([f"{where}: must be an object, not {kind}"])
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise SpecError([_describe(error, where) for error in exc.errors()]) from None


class SpecParser(Generic[M]):
    """``parse`` for one resource's loop, which reads its spec at every step (every poll):
    validated again only when the spec changed (a pydantic validation per poll of thousands
    of loops was a few percent of the operator's CPU). Equality, not identity: the body a
    loop reads is replaced by kopf at each watch event. What was parsed is a copy, so an
    edit in place of the dict it came from is a change too."""

    def __init__(self, model: type[M], where: str = "spec") -> None:
        self.model, self.where = model, where
        self._data: Any = _UNSET
        self._parsed: M | None = None
        self._problems: list[str] | None = None

    def __call__(self, data: Mapping[str, Any] | None) -> M:
        if self._data is _UNSET or data != self._data:
            self._data = copy.deepcopy(data)
            try:
                self._parsed, self._problems = parse(self.model, data, self.where), None
            except SpecError as exc:
                self._parsed, self._problems = None, exc.problems
        if self._problems is not None:
            raise SpecError(self._problems)
        assert self._parsed is not None
        return self._parsed


_UNSET: Any = object()


PART_LIMIT = 64
"""Characters of one path part quoted in a problem (a key may be a megabyte long)."""


def _short(text: str, limit: int = PART_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def _describe(error: Any, where: str) -> str:
    parts = (_short(repr(part) if "\n" in str(part) else str(part)) for part in error["loc"])
    path = ".".join(
        [where, *(p for p, raw in zip(parts, error["loc"], strict=True) if not _internal(raw))]
    )
    message = _short(str(error["msg"]).removeprefix("Value error, "), 512)
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{path}: {message}"


def _internal(part: Any) -> bool:
    # pydantic names wrapper validators in locations ("function-after[...]"): not a field.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))
