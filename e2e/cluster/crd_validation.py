"""What a kube-apiserver does with a CRD's schema, for tests and the emulator's admission.

- ``structural_violations``: the checks the API server runs when a CRD is created
  (structural schema rules, plus the CEL cost hygiene we hold ourselves to);
- ``admit``: what happens to a custom resource on create/update: defaulting, pruning,
  OpenAPI validation and CEL ``x-kubernetes-validations`` (transition rules only on update),
  with error strings in the API server's own format.

It covers the schema features our CRDs use; anything else is reported, never ignored.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import celpy

_KNOWN_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "enum",
        "default",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "format",
        "additionalProperties",
        "nullable",
        "x-kubernetes-validations",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})


OMITTED: Any = type("OmittedValue", (), {"__repr__": lambda self: "<omitted>"})()
# The note kube-apiserver appends when schema errors kept it from running the CEL rules.
RULES_NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


@dataclass(frozen=True)
class FieldError:
    """One error, printed like the API server prints a field.Error. ``value`` OMITTED: not
    printed (CEL rules on objects and arrays, as apiextensions-apiserver does)."""

    field: str
    kind: str  # Required value | Invalid value | Unsupported value | Too long | ...
    detail: str = ""
    value: Any = None
    # Blocks the CEL rules (apiextensions' hasBlockingErr): enum, required, too long, too
    # many and type errors; a wrong type prints as "Invalid value" but is one of them.
    type_error: bool = False

    @property
    def blocking(self) -> bool:
        return self.type_error or self.kind in (
            "Unsupported value",
            "Required value",
            "Too long",
            "Too many",
        )

    def __str__(self) -> str:
        if self.kind == "Required value":
            return f"{self.field}: Required value"
        if self.kind == "Unsupported value":
            return f"{self.field}: Unsupported value: {_show(self.value)}: {self.detail}"
        if self.kind in ("Too long", "Too many"):
            return f"{self.field}: {self.kind}: {self.detail}"
        if self.value is OMITTED:
            return f"{self.field}: Invalid value: {self.detail}"
        return f"{self.field}: Invalid value: {_show(self.value)}: {self.detail}"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


# --------------------------------------------------------------------------- CRD checks


def structural_violations(schema: dict[str, Any], path: str = "") -> list[str]:
    """Why ``schema`` (an openAPIV3Schema) would not be accepted as structural, or would
    give CEL rules an unbounded cost. Empty when it is fine."""
    problems: list[str] = []
    _check_node(schema, path or "openAPIV3Schema", problems, under_rules=False)
    return problems


def _check_node(node: dict[str, Any], path: str, problems: list[str], under_rules: bool) -> None:
    for key in node:
        if key not in _KNOWN_KEYWORDS:
            problems.append(f"{path}: keyword {key!r} is not allowed in a structural schema")
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    node_type = node.get("type")
    if node_type is None and not (preserve or int_or_string):
        problems.append(f"{path}: type is required")
    elif node_type is not None and node_type not in _TYPES:
        problems.append(f"{path}: unknown type {node_type!r}")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false is not allowed (pruning does it)")
    if "additionalProperties" in node and "properties" in node:
        problems.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if path.endswith(".metadata") and path.count(".") == 1 and set(node) - {"type"}:
        problems.append(f"{path}: only metadata.name/generateName may be restricted")
    rules = node.get("x-kubernetes-validations", [])
    for rule in rules:
        try:
            _compile(rule["rule"])
        except Exception as exc:
            problems.append(f"{path}: CEL rule {rule['rule']!r} does not compile: {exc}")
        if not rule.get("message"):
            problems.append(f"{path}: CEL rule {rule['rule']!r} has no message")
    under_rules = under_rules or bool(rules)
    if under_rules and node_type == "string" and "maxLength" not in node and "enum" not in node:
        problems.append(f"{path}: string under a CEL rule needs maxLength (cost estimation)")
    if under_rules and node_type == "array" and "maxItems" not in node:
        problems.append(f"{path}: array under a CEL rule needs maxItems (cost estimation)")
    for name, sub in node.get("properties", {}).items():
        _check_node(sub, f"{path}.{name}", problems, under_rules)
    if "items" in node:
        if not isinstance(node["items"], dict):
            problems.append(f"{path}: items must be one schema")
        else:
            _check_node(node["items"], f"{path}[*]", problems, under_rules)
    if "default" in node:
        default = copy.deepcopy(node["default"])
        errors = _validate(default, node, path, None) or _validate_rules(default, node, path, None)
        if errors:
            problems.append(f"{path}: default is invalid: {'; '.join(map(str, errors))}")


# --------------------------------------------------------------------------- admission


class Invalid(Exception):
    """The object was rejected; ``errors`` are what the API server would list."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


def admit(
    schema: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Default, prune and validate ``obj`` (old: the stored object on an update).
    Returns the object as it would be stored; raises Invalid."""
    obj = copy.deepcopy(obj)
    _default(obj, schema)
    _prune(obj, schema, root=True)
    # As apiextensions-apiserver: the OpenAPI schema first; the CEL rules only if none of its
    # errors is blocking (then a note says they were not checked), their errors after.
    errors = _validate(obj, schema, "", old, root=True)
    if any(e.blocking for e in errors):
        errors.append(FieldError("<nil>", "Invalid value", RULES_NOT_CHECKED, None))
    else:
        errors += _validate_rules(obj, schema, "", old, root=True)
    if errors:
        raise Invalid(errors)
    return obj


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(value[name], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


def _prune(value: Any, schema: dict[str, Any], root: bool = False) -> None:
    if isinstance(value, dict):
        if (
            schema.get("x-kubernetes-preserve-unknown-fields") is True
            and "properties" not in schema
        ):
            return
        properties = schema.get("properties", {})
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for name in list(value):
            if root and name in ("apiVersion", "kind", "metadata"):
                continue
            if name in properties:
                _prune(value[name], properties[name])
            elif not keep_unknown:
                del value[name]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _prune(item, schema["items"])


_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _validate(
    value: Any, schema: dict[str, Any], path: str, old: Any, root: bool = False
) -> list[FieldError]:
    where = path or "<root>"
    node_type = schema.get("type")
    if value is None and schema.get("nullable"):
        return []
    if node_type and not _TYPE_CHECKS[node_type](value):
        return [
            FieldError(
                where,
                "Invalid value",
                f"{where} in body must be of type {node_type}: {_show(_type_name(value))}",
                _type_name(value),
                type_error=True,
            )
        ]
    errors: list[FieldError] = []
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(
            FieldError(where, "Unsupported value", f"supported values: {supported}", value)
        )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(
                FieldError(
                    where, "Too long", f"may not be more than {schema['maxLength']} bytes", value
                )
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                FieldError(
                    where,
                    "Invalid value",
                    f"{where} in body should be at least {schema['minLength']} chars long",
                    value,
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                FieldError(
                    where,
                    "Invalid value",
                    f"{where} in body should match '{schema['pattern']}'",
                    value,
                )
            )
        if schema.get("format") == "date-time" and not _is_datetime(value):
            errors.append(
                FieldError(
                    where,
                    "Invalid value",
                    f"{where} in body must be of type date-time: {json.dumps(value)}",
                    value,
                )
            )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(
                FieldError(
                    where,
                    "Invalid value",
                    f"{where} in body should be greater than or equal to {schema['minimum']}",
                    value,
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(
                FieldError(
                    where,
                    "Invalid value",
                    f"{where} in body should be less than or equal to {schema['maximum']}",
                    value,
                )
            )
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                FieldError(
                    where,
                    "Too many",
                    f"{len(value)}: must have at most {schema['maxItems']} items",
                    value,
                )
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(
                FieldError(
                    where,
                    "Invalid value",
                    f"{where} in body should have at least {schema['minItems']} items",
                    len(value),  # kube-openapi's TooFewItems shows the size, not the list
                )
            )
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                errors += _validate(item, schema["items"], f"{path}[{index}]", None)
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(FieldError(_join(path, name), "Required value"))
        for name, sub in schema.get("properties", {}).items():
            if name in value and not (root and name in ("apiVersion", "kind", "metadata")):
                old_sub = old.get(name) if isinstance(old, dict) else None
                errors += _validate(value[name], sub, _join(path, name), old_sub)
    return errors


def _validate_rules(
    value: Any, schema: dict[str, Any], path: str, old: Any, root: bool = False
) -> list[FieldError]:
    """The CEL rules, in the CEL validator's order: a node's own rules, then its children's.
    Ratcheting (kube-apiserver 1.30+, CRDValidationRatcheting): a value an update leaves as
    it was is not held to the rules that do not use oldSelf, so an object stored before a
    rule existed can still have its other fields (its status) written."""
    if value is None:
        return []
    unchanged = old is not None and value == old
    errors = _run_rules(value, schema, path or "<root>", old, ratchet=unchanged)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _validate_rules(item, schema["items"], f"{path}[{index}]", None)
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value and not (root and name in ("apiVersion", "kind", "metadata")):
                old_sub = old.get(name) if isinstance(old, dict) else None
                errors += _validate_rules(value[name], sub, _join(path, name), old_sub)
    return errors


def _run_rules(
    value: Any, schema: dict[str, Any], where: str, old: Any, ratchet: bool = False
) -> list[FieldError]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue  # transition rules apply on update, when there is an old value
        if ratchet and not uses_old:
            continue  # unchanged: its errors would be ratcheted away (and CEL is slow here)
        activation = {"self": celpy.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = _compile(rule["rule"]).evaluate(activation)
        except Exception as exc:  # an evaluation error rejects the object, as in Kubernetes
            errors.append(
                FieldError(where, "Invalid value", f"rule evaluation error: {exc}", value)
            )
            continue
        if result is not True and not (
            isinstance(result, celpy.celtypes.BoolType) and bool(result)
        ):
            field = where + rule.get("fieldPath", "")
            errors.append(
                FieldError(
                    field,
                    "Invalid value",
                    rule.get("message") or f"failed rule: {rule['rule']}",
                    OMITTED if isinstance(value, dict | list) else value,
                )
            )
    return errors


@functools.cache
def _compile(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: Any) -> Any:
    return {dict: "object", list: "array"}.get(type(value), value)


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
