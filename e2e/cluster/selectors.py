"""Label and field selectors as the Kubernetes API server parses and applies them.

Label selectors (k8s.io/apimachinery/pkg/labels): comma-separated requirements, each one of
``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``, ``key in (a,b)``, ``key notin (a,b)``,
``key>N``, ``key<N``. ``!=`` and ``notin`` also match objects without the label.

Field selectors (k8s.io/apimachinery/pkg/fields): ``path=v``, ``path==v``, ``path!=v`` joined by
commas (``\\,``, ``\\=`` and ``\\\\`` escape). Which paths a resource supports is the resource's
business (see resources.py); an unsupported one is a 400 from the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    pass


_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op in ("gt", "lt"):
            if not present:
                return False
            try:
                number = int(str(value))
            except ValueError:
                return False
            limit = int(self.values[0])
            return number > limit if self.op == "gt" else number < limit
        raise AssertionError(self.op)  # pragma: no cover

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("gt", "lt"):
            return f"{self.key}{'>' if self.op == 'gt' else '<'}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_top(text: str) -> list[str]:
    """Split by commas outside of parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append(current)
    return parts


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not _VALUE_RE.match(value) or len(value) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label value: {value!r}")
    return value


_SET_RE = re.compile(r"^\s*(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^=!<>\s]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^=!<>\s]*)\s*$")


def parse_label_selector(text: str | None) -> LabelSelector:
    if text is None or not text.strip():
        return LabelSelector()
    requirements: list[Requirement] = []
    for part in _split_top(text):
        part = part.strip()
        if not part:
            raise SelectorError(f"unable to parse requirement: empty requirement in {text!r}")
        if match := _SET_RE.match(part):
            values = tuple(v.strip() for v in match["values"].split(","))
            if values == ("",):
                raise SelectorError(f"unable to parse requirement: {part!r}: empty set of values")
            requirements.append(
                Requirement(
                    _check_key(match["key"]), match["op"], tuple(_check_value(v) for v in values)
                )
            )
        elif match := _CMP_RE.match(part):
            op = {"==": "=", ">": "gt", "<": "lt"}.get(match["op"], match["op"])
            value = match["value"]
            if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", value):
                raise SelectorError(f"unable to parse requirement: {value!r} is not an integer")
            requirements.append(Requirement(_check_key(match["key"]), op, (_check_value(value),)))
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip()), "!exists"))
        elif " " not in part:
            requirements.append(Requirement(_check_key(part), "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {part!r}")
    return LabelSelector(tuple(requirements))


def from_label_selector_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels/matchExpressions) as a LabelSelector."""
    requirements: list[Requirement] = []
    for key, value in sorted(((selector or {}).get("matchLabels") or {}).items()):
        requirements.append(Requirement(key, "=", (str(value),)))
    for expr in (selector or {}).get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(
            expr.get("operator", "")
        )
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        requirements.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str  # = or !=
    value: str

    def matches(self, getter: Callable[[str], str | None]) -> bool:
        actual = getter(self.path)
        actual = "" if actual is None else actual
        return (actual == self.value) if self.op == "=" else (actual != self.value)


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, getter: Callable[[str], str | None]) -> bool:
        return all(r.matches(getter) for r in self.requirements)

    @property
    def paths(self) -> set[str]:
        return {r.path for r in self.requirements}

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _split_escaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append(current)
            current = ""
        else:
            current += char
    if escaped:
        raise SelectorError(f"invalid field selector: trailing backslash in {text!r}")
    parts.append(current)
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str | None) -> FieldSelector:
    if text is None or not text.strip():
        return FieldSelector()
    requirements = []
    for part in _split_escaped(text, ","):
        match = re.match(r"^(?P<path>[^=!]+)(?P<op>==|=|!=)(?P<value>.*)$", part.strip())
        if not match:
            raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
        op = "=" if match["op"] in ("=", "==") else "!="
        requirements.append(
            FieldRequirement(match["path"].strip(), op, _unescape(match["value"].strip()))
        )
    return FieldSelector(tuple(requirements))


def get_field(obj: Mapping[str, Any], path: str) -> str | None:
    """The string value at a dotted path (what field selectors compare against)."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if node is None:
        return None
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)
