"""Building blocks shared by the three kinds: the model base, validation rules, references.

A validation rule is written once, as a :class:`Rule`: its CEL expression goes into the CRD
(``x-kubernetes-validations``, enforced by the API server at apply time) and its Python twin
runs when the operator parses a spec, so a cluster without CRD validation (or an older CRD)
still gets the same answer, as ``Ready=False InvalidSpec``. Tests evaluate both on the same
resources and require the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from streamherd.api.durations import Duration

API_GROUP = "streamherd.io"
API_VERSION = "v1alpha1"

# RFC 1123 subdomain: what Kubernetes accepts as the name of a Secret, Deployment or custom resource.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A key inside a Secret's data.
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]
SecretKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)
]
# Redis keys may be any bytes; in a CRD they are strings, bounded so CEL cost stays finite.
RedisKey = Annotated[str, StringConstraints(min_length=1, max_length=512)]


@dataclass(frozen=True)
class Rule:
    """A validation rule: ``cel`` for the API server, ``check`` for the operator.

    ``check`` is None for transition rules (they compare with ``oldSelf``, which only the
    API server sees on an update).
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None

    def schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def exactly_one(a: str, b: str, message: str) -> Rule:
    """Exactly one of two optional fields (named by their JSON names) is set."""
    attr_a, attr_b = _attr(a), _attr(b)
    return Rule(
        cel=f"has(self.{a}) != has(self.{b})",
        message=message,
        check=lambda m: (getattr(m, attr_a) is None) != (getattr(m, attr_b) is None),
    )


def immutable(field: str, message: str) -> Rule:
    """A field that may not change once set (and may not be added or removed later)."""
    return Rule(
        cel=(
            f"has(self.{field}) == has(oldSelf.{field})"
            f" && (!has(self.{field}) || self.{field} == oldSelf.{field})"
        ),
        message=message,
    )


def _attr(json_name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in json_name)


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected, docstrings
    as descriptions, and the class's ``rules`` enforced in Python and exported as CEL."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise PydanticCustomError("rule", rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler.resolve_ref_schema(handler(schema))
        if cls.rules:
            json_schema["x-kubernetes-validations"] = [rule.schema() for rule in cls.rules]
        return json_schema

    def to_json(self) -> dict[str, Any]:
        """The wire form: camelCase, unset optionals omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Validated:
    """Field-level rules: ``Annotated[T, Validated(rule, ...)]`` (``self`` is the field's value)."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            for rule in self.rules:
                if rule.check is not None and not rule.check(value):
                    raise PydanticCustomError("rule", rule.message)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        existing = json_schema.get("x-kubernetes-validations", [])
        json_schema["x-kubernetes-validations"] = existing + [r.schema() for r in self.rules]
        return json_schema


def at_least(minimum: str) -> Validated:
    """A lower bound on a Duration field."""
    floor = Duration.parse(minimum)
    return Validated(
        Rule(
            cel=f"duration(self) >= duration('{minimum}')",
            message=f"must be at least {minimum}",
            check=lambda value: value >= floor,
        )
    )


def unchanged(message: str) -> Validated:
    """A field that may not change after creation."""
    return Validated(Rule(cel="self == oldSelf", message=message))


class LocalObjectReference(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ObjectName
    """Name of the object."""


class SecretKeyReference(ApiModel):
    """A key in a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: SecretKey
    """Key inside the Secret's data."""
