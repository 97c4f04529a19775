"""The admission contract of the API emulator (shared with e2e/cluster/crd_validation.py).

An admission function is registered per resource with ``api.add_admission(resource, fn)``.
It is called on every create and update of an object of that resource (main endpoint and
``/status``) as ``fn(new_obj, old_obj)`` (``old_obj`` is None on create) and returns the object to
store (possibly defaulted) or raises :class:`AdmissionError` with a list of :class:`FieldError`.
The API server turns that into ``422 Invalid`` with a Kubernetes ``Status`` whose message reads
like a real API server's: ``Kind.group "name" is invalid: spec.x: Invalid value: 5: detail``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Field error types of k8s.io/apimachinery/pkg/util/validation/field, with their Status reasons.
CAUSE_REASONS = {
    "Invalid": "FieldValueInvalid",
    "Required": "FieldValueRequired",
    "Forbidden": "FieldValueForbidden",
    "NotSupported": "FieldValueNotSupported",
    "Duplicate": "FieldValueDuplicate",
    "TooLong": "FieldValueTooLong",
    "TooMany": "FieldValueTooMany",
    "NotFound": "FieldValueNotFound",
    "Internal": "InternalError",
}

_NO_VALUE: Any = object()

# How field.ErrorType prints (field.Error.Error()), back to the type names above.
_KIND_TYPES = {
    "Invalid value": "Invalid",
    "Required value": "Required",
    "Forbidden": "Forbidden",
    "Unsupported value": "NotSupported",
    "Duplicate value": "Duplicate",
    "Too long": "TooLong",
    "Too many": "TooMany",
    "Not found": "NotFound",
    "Internal error": "Internal",
}


def format_value(value: Any) -> str:
    """Render a bad value roughly the way apimachinery does: quoted strings, bare numbers."""
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class FieldError:
    """One field error: ``field`` is a dotted path like ``spec.autoscaling.maxReplicas``."""

    field: str
    message: str = ""
    type: str = "Invalid"
    value: Any = _NO_VALUE
    supported: tuple[str, ...] = ()  # for type="NotSupported"
    rendered: str | None = None  # the body as another validator already printed it

    @property
    def reason(self) -> str:
        return CAUSE_REASONS.get(self.type, "FieldValueInvalid")

    def body(self) -> str:
        """The message without the field (what Status.details.causes[].message holds)."""
        if self.rendered is not None:
            return self.rendered
        value = "" if self.value is _NO_VALUE else format_value(self.value)
        if self.type == "Invalid":
            text = f"Invalid value: {value or 'null'}"
        elif self.type == "Required":
            text = "Required value"
        elif self.type == "Forbidden":
            text = "Forbidden"
        elif self.type == "NotSupported":
            text = f"Unsupported value: {value or 'null'}"
            if self.supported:
                text += ": supported values: " + ", ".join(json.dumps(s) for s in self.supported)
        elif self.type == "Duplicate":
            text = f"Duplicate value: {value or 'null'}"
        elif self.type == "TooLong":
            text = "Too long"
        elif self.type == "TooMany":
            text = "Too many"
        elif self.type == "NotFound":
            text = f"Not found: {value or 'null'}"
        else:
            text = "Internal error"
        return f"{text}: {self.message}" if self.message else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    @classmethod
    def coerce(cls, item: Any) -> FieldError:
        """Accept FieldError, a mapping with field/message[/type/value], or a (field, message) pair."""
        if isinstance(item, FieldError):
            return item
        if isinstance(item, Mapping):
            kwargs = {k: item[k] for k in ("field", "message", "type", "value") if k in item}
            if "supported" in item:
                kwargs["supported"] = tuple(item["supported"])
            return cls(**kwargs)
        if isinstance(item, tuple | list) and len(item) == 2:
            return cls(field=str(item[0]), message=str(item[1]))
        # Duck typing for other validators' error classes, e.g. crd_validation.FieldError
        # (field, kind="Invalid value"|"Required value"|..., detail, value; str() = the line).
        field = getattr(item, "field", None)
        if field is not None:
            kind = str(getattr(item, "type", None) or getattr(item, "kind", None) or "Invalid")
            text = str(item)
            prefix = f"{field}: "
            return cls(
                field=str(field),
                message=str(getattr(item, "message", None) or getattr(item, "detail", "") or ""),
                type=_KIND_TYPES.get(kind, kind if kind in CAUSE_REASONS else "Invalid"),
                value=getattr(item, "value", _NO_VALUE),
                rendered=text[len(prefix) :] if text.startswith(prefix) else None,
            )
        raise TypeError(f"not a field error: {item!r}")


class AdmissionError(Exception):
    """Raised by admission functions; carries the field errors that make the object invalid."""

    def __init__(self, errors: Iterable[Any]) -> None:
        self.errors = [FieldError.coerce(e) for e in errors]
        super().__init__("; ".join(str(e) for e in self.errors))


def errors_of(exc: BaseException) -> list[FieldError] | None:
    """Field errors carried by an exception (AdmissionError or anything with ``.errors``)."""
    errors = getattr(exc, "errors", None)
    if errors is None or callable(errors):
        return None
    try:
        return [FieldError.coerce(e) for e in errors]
    except TypeError:
        return None
