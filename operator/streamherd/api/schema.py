"""pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema.

Kubernetes wants every node typed and self-contained: no $ref, no anyOf for optionals, no
additionalProperties: false (pruning does that job), and defaults only where they add
something. The models stay the single source of truth; this only changes the shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DROP = frozenset({"title", "additionalProperties"})


def structural_schema(model: type[BaseModel], *, defaults: bool = True) -> dict[str, Any]:
    """``defaults=False`` for status: only the operator writes it, defaults there are noise."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _convert(raw, definitions, _DROP if defaults else _DROP | {"default"})


def _convert(
    node: dict[str, Any], definitions: dict[str, Any], drop: frozenset[str] = _DROP
) -> dict[str, Any]:
    node = _inline(node, definitions)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in drop:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, definitions, drop) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, definitions, drop)
        else:
            out[key] = value
    if out.get("default", ...) is None:
        del out["default"]
    if "default" in out and out.get("type") == "object":
        out["default"] = _minimal_default(out["default"], out)
    return out


def _inline(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Resolve $ref (siblings win: they carry the field's own description and rules) and
    collapse Optional[X] (anyOf [X, null]) to X: optional means "not required" in Kubernetes."""
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **_merge_rules(target, siblings)}, definitions)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional[X] cannot be structural: {node}")
        siblings = {k: v for k, v in node.items() if k != "anyOf"}
        option = _inline(options[0], definitions)
        return {**option, **_merge_rules(option, siblings)}
    return node


def _merge_rules(target: dict[str, Any], siblings: dict[str, Any]) -> dict[str, Any]:
    key = "x-kubernetes-validations"
    if key in target and key in siblings:
        return {**siblings, key: target[key] + siblings[key]}
    return siblings


def _minimal_default(default: Any, schema: dict[str, Any]) -> Any:
    """An object default without what the nested schema defaults anyway (the API server
    applies nested defaults after the parent's): ``recovery: {}`` rather than a full copy."""
    if not isinstance(default, dict):
        return default
    properties = schema.get("properties", {})
    out = {}
    for key, value in default.items():
        sub = properties.get(key, {})
        if value is None:
            continue
        value = _minimal_default(value, sub)
        if "default" in sub and sub["default"] == value:
            continue
        if value == {} and sub.get("type") == "object" and "default" in sub:
            continue
        out[key] = value
    return out
