"""Server-side printing (``Accept: ...;as=Table;g=meta.k8s.io``), for ``kubectl get`` columns.

Built-in kinds get the columns kubectl users know for pods, deployments, replicasets and
namespaces; custom resources get their CRD's additionalPrinterColumns; everything has NAME/AGE.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from e2e.cluster.resources import ResourceType

Column = tuple[str, str, int, Callable[[Mapping[str, Any]], Any]]  # name, type, priority, getter


def wants_table(accept: str) -> bool:
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def age(timestamp: str | None) -> str:
    """Like kubectl's HumanDuration, roughly: 5s, 3m, 2h, 4d."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        return "<invalid>"
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_TOKEN = re.compile(
    r"""\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]"""
)


def jsonpath(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: .a.b, [0], [?(@.type=="Ready")]."""
    values = [obj]
    for match in _TOKEN.finditer(path.strip().lstrip("{").rstrip("}").removeprefix("$")):
        key, index, fkey, fvalue = match.groups()
        found = []
        for value in values:
            if key is not None and isinstance(value, Mapping) and key in value:
                found.append(value[key])
            elif index is not None and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif fkey is not None and isinstance(value, list):
                found += [
                    item
                    for item in value
                    if isinstance(item, Mapping) and str(_dig(item, fkey)) == fvalue
                ]
        values = found
    return values[0] if values else None


def _dig(obj: Mapping[str, Any], dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _pod_status(pod: Mapping[str, Any]) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        state = status.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            return str(state["waiting"]["reason"])
        if "terminated" in state and (pod.get("status") or {}).get("phase") not in (
            "Succeeded",
            "Failed",
        ):
            return str(state["terminated"].get("reason", "Error"))
    return str((pod.get("status") or {}).get("phase", "Pending"))


def _columns(rtype: ResourceType) -> list[Column]:
    name: Column = ("Name", "string", 0, lambda o: o["metadata"]["name"])
    created: Column = ("Age", "date", 0, lambda o: o["metadata"].get("creationTimestamp"))
    key = rtype.key
    if key == ("", "pods"):

        def ready(o: Mapping[str, Any]) -> str:
            statuses = (o.get("status") or {}).get("containerStatuses") or ()
            total = len((o.get("spec") or {}).get("containers") or ())
            return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"

        return [
            name,
            ("Ready", "string", 0, ready),
            ("Status", "string", 0, _pod_status),
            (
                "Restarts",
                "integer",
                0,
                lambda o: sum(
                    s.get("restartCount", 0)
                    for s in (o.get("status") or {}).get("containerStatuses") or ()
                ),
            ),
            created,
            ("IP", "string", 1, lambda o: (o.get("status") or {}).get("podIP")),
            ("Node", "string", 1, lambda o: (o.get("spec") or {}).get("nodeName")),
        ]
    if key == ("apps", "deployments"):
        return [
            name,
            (
                "Ready",
                "string",
                0,
                lambda o: "{}/{}".format(
                    (o.get("status") or {}).get("readyReplicas", 0),
                    (o.get("spec") or {}).get("replicas", 0),
                ),
            ),
            (
                "Up-to-date",
                "integer",
                0,
                lambda o: (o.get("status") or {}).get("updatedReplicas", 0),
            ),
            (
                "Available",
                "integer",
                0,
                lambda o: (o.get("status") or {}).get("availableReplicas", 0),
            ),
            created,
        ]
    if key == ("apps", "replicasets"):
        return [
            name,
            ("Desired", "integer", 0, lambda o: (o.get("spec") or {}).get("replicas", 0)),
            ("Current", "integer", 0, lambda o: (o.get("status") or {}).get("replicas", 0)),
            ("Ready", "integer", 0, lambda o: (o.get("status") or {}).get("readyReplicas", 0)),
            created,
        ]
    if key in (("", "namespaces"), ("", "nodes")):

        def phase(o: Mapping[str, Any]) -> Any:
            if key == ("", "nodes"):
                return "Ready"
            return (o.get("status") or {}).get("phase")

        return [name, ("Status", "string", 0, phase), created]
    columns = [name]
    for col in rtype.printer_columns:
        path = col.get("jsonPath", "")
        columns.append(
            (
                col["name"],
                col.get("type", "string"),
                int(col.get("priority", 0)),
                lambda o, path=path: jsonpath(o, path),
            )
        )
    if not any(c.get("jsonPath") == ".metadata.creationTimestamp" for c in rtype.printer_columns):
        columns.append(created)
    return columns


def table(
    rtype: ResourceType,
    objects: Sequence[Mapping[str, Any]],
    resource_version: str,
    include_object: str = "PartialObjectMetadata",
) -> dict[str, Any]:
    columns = _columns(rtype)
    rows = []
    for obj in objects:
        cells = []
        for _, kind, _, getter in columns:
            value = getter(obj)
            cells.append(age(value) if kind == "date" else value)
        if include_object == "Object":
            embedded: Any = dict(obj)
        elif include_object == "None":
            embedded = None
        else:
            embedded = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append({"cells": cells, "object": embedded})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": "string" if kind == "date" else kind,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, kind, priority, _ in columns
        ],
        "rows": rows,
    }
