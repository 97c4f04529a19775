"""A tiny kopf operator for test_clients.py: it reconciles Widgets into status and events."""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "test.streamherd.io/finalizer"
    settings.watching.server_timeout = 30
    settings.posting.level = 0


@kopf.on.create("test.streamherd.io", "v1", "widgets")
def created(spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict[str, Any]:
    kopf.info(body, reason="Created", message=f"size {spec.get('size')}")
    return {"size": spec.get("size")}


@kopf.on.update("test.streamherd.io", "v1", "widgets", field="spec.size")
def resized(new: Any, patch: kopf.Patch, **_: Any) -> None:
    patch.status["resized"] = new


@kopf.on.delete("test.streamherd.io", "v1", "widgets")
def deleted(body: kopf.Body, **_: Any) -> None:
    kopf.info(body, reason="Deleted", message="bye")
