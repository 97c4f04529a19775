"""Reading a resource's spec into its model, with errors a user can act on.

The API server normally rejects bad specs at apply time (the CRD's schema and CEL rules);
this is the operator's second line: it reports the same problems as ``Ready=False
InvalidSpec`` when a spec slips through (no CRD validation, an older CRD, a direct etcd
write) instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """A spec that does not validate; ``problems`` are lines like ``spec.key: ...``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse(model: type[M], data: Mapping[str, Any] | None, where: str = "spec") -> M:
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise SpecError([_describe(error, where) for error in exc.errors()]) from None


def _describe(error: Any, where: str) -> str:
    path = ".".join([where, *(str(part) for part in error["loc"] if not _internal(part))])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{path}: {message}"


def _internal(part: Any) -> bool:
    # pydantic names wrapper validators in locations ("function-after[...]"): not a field.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))
