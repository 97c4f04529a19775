"""An emulated Kubernetes API server: kmock's KubernetesEmulator with the rules of a real one.

kmock serves HTTP, records requests, lets tests inject reactions with its DSL
(``api['get pods'] << 500``) and keeps every object's history in ``api.objects``. What kmock does
not do, this subclass does, each rule as the Kubernetes API conventions state it:
resourceVersion/uid/creationTimestamp/generation, 409 on stale writes, status subresource
separation, merge-patch and JSON-patch (with ``test``), label/field selectors, watch resumption,
BOOKMARKs and 410 Gone, finalizers, owner references with garbage collection, /scale, CRDs that
register new resources, namespaces, admission hooks (422 Invalid). See README.md in this folder.

Threading: all state lives in one asyncio loop (the one running :meth:`ApiServer.serving`). The
public helper methods (get/list/create/patch/delete/compact/add_admission/...) may be called from
any thread; they run in that loop and wait for the result.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import collections
import concurrent.futures
import contextlib
import copy
import datetime
import functools
import json
import logging
import re
import secrets
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, enums, rendering  # kmock's request model (no public export)

from e2e.cluster import crd_validation, patching, selectors, tables
from e2e.cluster.admission import errors_of
from e2e.cluster.resources import (
    STANDARD_VERBS,
    SUBRESOURCE_VERBS,
    ResourceType,
    builtin_types,
    kopf_peering_crds,
    type_from_crd,
)

log = logging.getLogger(__name__)

SAFE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes
APPLY_PATCH = "application/apply-patch+yaml"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def now_iso(offset: float = 0.0) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(SAFE_CHARS) for _ in range(length))


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A metav1.LabelSelector rendered the way /scale's status.selector shows it."""
    return str(selectors.from_label_selector_object(selector))


class ApiError(Exception):
    """An error the API returns as a ``Status`` object."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = dict(details or {})
        self.page_not_found = False  # answered as Go's mux does: text/plain "404 page not found"

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details or self.reason == "NotFound":
            status["details"] = self.details  # kube-apiserver sends "details": {} for no route
        return status

    @staticmethod
    def _details(rtype: ResourceType | None, name: str | None) -> dict[str, Any]:
        details: dict[str, Any] = {"name": name} if name else {}
        if rtype is not None:
            if rtype.group:
                details["group"] = rtype.group
            details["kind"] = rtype.plural
        return details

    @classmethod
    def not_found(cls, rtype: ResourceType, name: str) -> ApiError:
        return cls(
            404, "NotFound", f'{rtype.group_resource} "{name}" not found', cls._details(rtype, name)
        )

    @classmethod
    def no_route(cls) -> ApiError:
        """A path under a served API group that names nothing (a Status, as kube-apiserver)."""
        return cls(404, "NotFound", "the server could not find the requested resource")

    @classmethod
    def page_not_found_error(cls) -> ApiError:
        """A path under an API group nobody serves (KEDA's, before it is installed):
        kube-apiserver answers that from its mux, in plain text, not with a Status."""
        error = cls(404, "NotFound", "404 page not found")
        error.page_not_found = True
        return error

    @classmethod
    def already_exists(cls, rtype: ResourceType, name: str) -> ApiError:
        return cls(
            409,
            "AlreadyExists",
            f'{rtype.group_resource} "{name}" already exists',
            cls._details(rtype, name),
        )

    @classmethod
    def conflict(cls, rtype: ResourceType, name: str, why: str | None = None) -> ApiError:
        why = why or (
            "the object has been modified; please apply your changes to the latest "
            "version and try again"
        )
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": {why}',
            cls._details(rtype, name),
        )

    @classmethod
    def invalid(cls, rtype: ResourceType, name: str, errors: Sequence[Any]) -> ApiError:
        causes = [{"reason": e.reason, "message": e.body(), "field": e.field} for e in errors]
        texts = [str(e) for e in errors]
        summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        details = cls._details(rtype, name)
        details["kind"] = rtype.kind
        details["causes"] = causes
        return cls(
            422, "Invalid", f'{rtype.qualified_kind} "{name}" is invalid: {summary}', details
        )

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def gone(cls, message: str) -> ApiError:
        return cls(410, "Expired", message)

    @classmethod
    def forbidden(cls, rtype: ResourceType, name: str, why: str) -> ApiError:
        return cls(
            403,
            "Forbidden",
            f'{rtype.group_resource} "{name}" is forbidden: {why}',
            cls._details(rtype, name),
        )

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )


def _field_error(field: str, message: str, type_: str = "Invalid", value: Any = None) -> Any:
    from e2e.cluster.admission import FieldError

    return FieldError(field=field, message=message, type=type_, value=value)


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype_key: tuple[str, str]
    old: dict[str, Any] | None
    new: dict[str, Any]


@dataclass(frozen=True)
class Route:
    kind: str  # root | api | apis | group | version | resource | other
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_path: bool = False  # the deprecated /watch/ URL prefix


def parse_route(path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return Route("root")
    if parts[0] == "api":
        if len(parts) == 1:
            return Route("api")
        group, rest = "", parts[1:]
    elif parts[0] == "apis":
        if len(parts) == 1:
            return Route("apis")
        if len(parts) == 2:
            return Route("group", group=parts[1])
        group, rest = parts[1], parts[2:]
    else:
        return Route("other")
    version, rest = rest[0], rest[1:]
    if not rest:
        return Route("version", group=group, version=version)
    watch_path = rest[0] == "watch"
    rest = rest[1:] if watch_path else rest
    namespace = None
    if (
        rest
        and rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return Route("other")
    return Route(
        "resource",
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
        watch_path=watch_path,
    )


def _threadsafe(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run the method in the server's loop when called from another thread, and wait."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        self = args[0]
        loop: asyncio.AbstractEventLoop | None = getattr(self, "_loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            return fn(*args, **kwargs)
        future: concurrent.futures.Future[_R] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return future.result(timeout=30)

    return wrapper


AdmissionFn = Callable[[dict[str, Any], dict[str, Any] | None], dict[str, Any]]


@attrs.define(kw_only=True, slots=False)
class ApiServer(kmock.KubernetesEmulator):
    """The emulated API server. ``crds``: CRD files or folders to install at start."""

    crds: Sequence[str | Path] = ()
    bookmark_interval: float = 5.0  # real servers: about a minute
    history_limit: int = 20000  # watch events kept for resumption (etcd compaction: 5 minutes)
    server_version: tuple[str, str] = ("1", "33")
    # Test conveniences that grow without bound; a long-running demo turns them off.
    record_requests: bool = True  # kmock's request log (kube_api["post"], ...)
    keep_history: bool = True  # every version of every object in kube_api.objects

    def __attrs_post_init__(self) -> None:
        # NB: not calling kmock's __attrs_post_init__: its fallback reactions would serve
        # kmock's own (rule-less) CRUD; ours is served from _handle() instead.
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._live: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = {}
        self._uids: dict[str, tuple[tuple[str, str], str | None, str]] = {}
        self._rv = 1
        self._log: collections.deque[WatchEvent] = collections.deque()
        self._compacted = 0  # watches may resume from rv >= this
        self._watch_breaks: dict[tuple[str, str], int] = {}  # per type: break_watches() calls
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._admission: dict[tuple[str, str], list[AdmissionFn]] = collections.defaultdict(list)
        self._applied: dict[tuple[Any, str | None, str, str], dict[str, Any]] = {}
        """Server-side apply: each manager's last applied configuration per object."""
        self._gc_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._url: str | None = None
        self.internal_errors: list[BaseException] = []
        self.request_counts: collections.Counter[tuple[str, str, str | None]] = (
            collections.Counter()
        )
        """Requests served, by (method, resource plural, subresource): kept even without
        ``record_requests`` (a benchmark's API writes per second, at no memory cost)."""
        # Hooks for the kubelet (kubelet.py): reading pod logs, and whether pods terminate
        # gracefully (deletionTimestamp first, the kubelet removes them) or at once.
        self.pod_logs: Callable[[str, str, str | None, bool], str] | None = None
        self.graceful_pod_deletion = False
        for rtype in builtin_types():
            self._register(rtype)
        for name in SYSTEM_NAMESPACES:
            self._create(self._types[("", "namespaces")], None, {"metadata": {"name": name}})
        for crd in kopf_peering_crds():
            self._create(
                self._types[("apiextensions.k8s.io", "customresourcedefinitions")], None, crd
            )
        for path in self.crds:
            self.load(path)

    # ------------------------------------------------------------------ registry

    def _register(self, rtype: ResourceType) -> None:
        self._types[rtype.key] = rtype
        self._live.setdefault(rtype.key, {})
        self._resources[rtype.storage] = kmock.ResourceInfo(
            namespaced=rtype.namespaced,
            kind=rtype.kind,
            singular=rtype.singular,
            verbs=set(STANDARD_VERBS),
            shortnames=set(rtype.short_names),
            categories=set(rtype.categories),
            subresources=set(rtype.subresources),
        )

    def _unregister(self, key: tuple[str, str]) -> None:
        rtype = self._types.pop(key, None)
        if rtype is not None:
            with contextlib.suppress(KeyError):
                del self._resources[rtype.storage]

    def _serves_group(self, group: str) -> bool:
        return any(t.group == group for t in self._types.values())

    def find_type(self, group: str, version: str | None, plural: str) -> ResourceType | None:
        rtype = self._types.get((group, plural))
        if rtype is None or (version is not None and version not in rtype.versions):
            return None
        return rtype

    def resolve(self, spec: ResourceType | str | kmock.resource) -> ResourceType:
        """A resource by ``pods``, ``v1/pods``, ``deployments.apps``, ``apps/v1/deployments``..."""
        if isinstance(spec, ResourceType):
            return spec
        ref = spec if isinstance(spec, kmock.resource) else kmock.resource(spec)
        plural = (ref.plural or "").lower()
        candidates = [
            t
            for t in self._types.values()
            if plural in (t.plural, t.singular, t.kind.lower(), *t.short_names)
            and (ref.group is None or t.group == ref.group)
            and (ref.version is None or ref.version in t.versions)
        ]
        candidates.sort(key=lambda t: (t.group != "", t.group))
        if not candidates:
            raise LookupError(f"no such resource served: {spec!r}")
        return candidates[0]

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rtype in self._types.values():
            if rtype.group == group and rtype.kind == kind and version in rtype.versions:
                return rtype
        raise ApiError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')

    # ------------------------------------------------------------------ storage primitives

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion (all resources share one counter, as in etcd)."""
        return self._rv

    def change_event(self) -> asyncio.Event:
        """An event set on the next write (for in-loop watchers such as the kubelet)."""
        return self._changed

    def _stored(
        self, rtype: ResourceType, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        return self._live.get(rtype.key, {}).get((namespace if rtype.namespaced else None, name))

    def _items(self, rtype: ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        store = self._live.get(rtype.key, {})
        keys = sorted(
            (k for k in store if namespace is None or k[0] == namespace),
            key=lambda k: (k[0] or "", k[1]),
        )
        return [store[k] for k in keys]

    def _commit(
        self, rtype: ResourceType, event_type: str, old: dict[str, Any] | None, new: dict[str, Any]
    ) -> None:
        """Store a new state (the caller has stamped its resourceVersion) and notify watchers."""
        meta = new["metadata"]
        key = (meta.get("namespace") if rtype.namespaced else None, meta["name"])
        store = self._live.setdefault(rtype.key, {})
        kkey = (rtype.storage, key[0], key[1])
        if event_type == "DELETED":
            store.pop(key, None)
            self._uids.pop(meta.get("uid", ""), None)
            if kkey in self._objects and self.keep_history:
                self._objects[kkey].delete()
            elif kkey in self._objects:
                del self._objects[kkey]
        else:
            store[key] = new
            self._uids[meta["uid"]] = (rtype.key, key[0], key[1])
            if kkey in self._objects and self.keep_history:
                self._objects[kkey].create(copy.deepcopy(new))
            else:
                self._objects[kkey] = copy.deepcopy(new)
        self._log.append(WatchEvent(int(meta["resourceVersion"]), event_type, rtype.key, old, new))
        while len(self._log) > self.history_limit:
            dropped = self._log.popleft()
            self._compacted = max(self._compacted, dropped.rv)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        old_refs = (old or {}).get("metadata", {}).get("ownerReferences")
        if (
            event_type == "DELETED"
            or meta.get("deletionTimestamp")
            or meta.get("ownerReferences") != old_refs
        ):
            self._schedule_gc()

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # ------------------------------------------------------------------ defaulting & rules

    def _normalize(
        self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Server-side defaulting and conversion of a few built-in kinds."""
        key = rtype.key
        if key == ("", "secrets"):
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {}) or {}
                obj["data"] = data
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif key == ("", "namespaces"):
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
            if old is None:
                obj["status"] = {"phase": "Active"}
        elif key == ("", "pods"):
            _default_pod_spec(obj.setdefault("spec", {}))
            if old is None:
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif key in (("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets")):
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            if key == ("apps", "deployments"):
                spec.setdefault("progressDeadlineSeconds", 600)
                strategy = spec.setdefault("strategy", {})
                strategy.setdefault("type", "RollingUpdate")
                if strategy["type"] == "RollingUpdate":
                    rolling = strategy.setdefault("rollingUpdate", {})
                    rolling.setdefault("maxSurge", "25%")
                    rolling.setdefault("maxUnavailable", "25%")
            _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
        elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            if old is None:
                obj["metadata"].setdefault("finalizers", []).append(CRD_CLEANUP_FINALIZER)
            names = (obj.get("spec") or {}).get("names") or {}
            versions = [
                v["name"] for v in (obj.get("spec") or {}).get("versions") or [] if v.get("storage")
            ]
            obj["status"] = {
                "acceptedNames": {k: v for k, v in names.items()},
                "storedVersions": versions,
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "message": "no conflicts found",
                        "lastTransitionTime": now_iso(),
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                        "lastTransitionTime": now_iso(),
                    },
                ],
            }

    def _validate(
        self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> list[Any]:
        """The few built-in validation rules an operator is likely to run into."""
        errors = []
        name = obj["metadata"]["name"]
        if not _NAME_RE.match(name) or len(name) > 253:
            errors.append(
                _field_error(
                    "metadata.name",
                    "a lowercase RFC 1123 subdomain must consist of lower case "
                    "alphanumeric characters, '-' or '.', and must start and end with an "
                    "alphanumeric character",
                    value=name,
                )
            )
        if rtype.key in (("apps", "deployments"), ("apps", "replicasets")):
            spec = obj.get("spec") or {}
            try:
                selector = selectors.from_label_selector_object(spec.get("selector"))
            except selectors.SelectorError as exc:
                selector = None
                errors.append(_field_error("spec.selector", str(exc), value=spec.get("selector")))
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if selector is not None and not selector:
                errors.append(_field_error("spec.selector", "", type_="Required"))
            elif selector is not None and not selector.matches(labels):
                errors.append(
                    _field_error(
                        "spec.template.metadata.labels",
                        "`selector` does not match template `labels`",
                        value=labels,
                    )
                )
            if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
                errors.append(
                    _field_error("spec.selector", "field is immutable", value=spec.get("selector"))
                )
            if not isinstance(spec.get("replicas", 1), int) or spec.get("replicas", 1) < 0:
                errors.append(
                    _field_error(
                        "spec.replicas",
                        "must be greater than or equal to 0",
                        value=spec.get("replicas"),
                    )
                )
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj.get("spec") or {}
            expected = f"{(spec.get('names') or {}).get('plural')}.{spec.get('group')}"
            if name != expected:
                errors.append(
                    _field_error(
                        "metadata.name", 'must be spec.names.plural+"."+spec.group', value=name
                    )
                )
        return errors

    def _admit(
        self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        errors = self._validate(rtype, obj, old)
        if errors:
            raise ApiError.invalid(rtype, name, errors)
        if rtype.custom and rtype.schema is not None:
            # A CRD's schema: defaulting, pruning, OpenAPI and CEL validation (crd_validation).
            try:
                obj = crd_validation.admit(dict(rtype.schema), obj, old)
            except crd_validation.Invalid as exc:
                raise ApiError.invalid(rtype, name, errors_of(exc) or []) from exc
        for fn in list(self._admission.get(rtype.key, ())):
            try:
                result = fn(copy.deepcopy(obj), copy.deepcopy(old) if old is not None else None)
            except ApiError:
                raise
            except Exception as exc:
                field_errors = errors_of(exc)
                if field_errors is None:
                    raise ApiError(
                        500,
                        "InternalError",
                        f"Internal error occurred: admission of {rtype.qualified_kind}"
                        f' "{name}" failed: {exc!r}',
                    ) from exc
                raise ApiError.invalid(rtype, name, field_errors) from exc
            if result is not None:
                if not isinstance(result, dict):
                    raise ApiError(
                        500,
                        "InternalError",
                        f"admission returned {type(result).__name__}, not an object",
                    )
                obj = result
        return obj

    def _check_namespace(self, rtype: ResourceType, namespace: str, name: str) -> None:
        ns = self._stored(self._types[("", "namespaces")], None, namespace)
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError.forbidden(
                rtype,
                name,
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated",
            )

    # ------------------------------------------------------------------ core operations

    def _create(
        self, rtype: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if rtype.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError.invalid(
                    rtype,
                    "",
                    [
                        _field_error(
                            "metadata.name", "name or generateName is required", type_="Required"
                        )
                    ],
                )
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta["name"]
        if namespace is not None:
            self._check_namespace(rtype, namespace, name)
        if self._stored(rtype, namespace, name) is not None:
            raise ApiError.already_exists(rtype, name)
        obj["apiVersion"] = rtype.api_version()
        obj["kind"] = rtype.kind
        for field in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ):
            meta.pop(field, None)
        if "status" in rtype.subresources:
            obj.pop("status", None)  # status is reset on create (PrepareForCreate)
        _drop_empty_metadata(meta)
        self._normalize(rtype, obj, None)
        obj = self._admit(rtype, obj, None)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        if rtype.has_generation:
            meta["generation"] = 1
        if dry_run:
            return obj
        meta["resourceVersion"] = self._next_rv()
        self._commit(rtype, "ADDED", None, obj)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register(type_from_crd(obj))
        return obj

    def _update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], Any],
        *,
        subresource: str | None = None,
        replace: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Read-modify-write of one object with all the API server's rules.

        ``mutate(current_copy)`` returns the desired object (a patch applied, or a PUT body).
        """
        namespace = namespace if rtype.namespaced else None
        current = self._stored(rtype, namespace, name)
        if current is None:
            raise ApiError.not_found(rtype, name)
        try:
            new = mutate(copy.deepcopy(current))
        except patching.PatchFormatError as exc:
            raise ApiError.bad_request(str(exc)) from exc
        except patching.PatchError as exc:
            raise ApiError(422, "UnprocessableEntity", str(exc)) from exc
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise ApiError.bad_request("the patched object is not a valid object")
        new.setdefault("metadata", {})
        cur_meta = current["metadata"]
        # Optimistic concurrency: a resourceVersion in the request must be the stored one.
        wanted_rv = new["metadata"].get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != cur_meta["resourceVersion"]:
            raise ApiError.conflict(rtype, name)
        if replace and wanted_rv in (None, "") and rtype.custom:
            raise ApiError.invalid(
                rtype,
                name,
                [
                    _field_error(
                        "metadata.resourceVersion", "must be specified for an update", value=0
                    )
                ],
            )
        if new["metadata"].get("name", name) != name:
            raise ApiError.bad_request(
                f"the name of the object ({new['metadata']['name']}) does "
                f"not match the name on the URL ({name})"
            )
        if subresource == "status":
            result = copy.deepcopy(current)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            if "status" in rtype.subresources:
                if "status" in current:
                    result["status"] = copy.deepcopy(current["status"])
                else:
                    result.pop("status", None)
        meta = result.setdefault("metadata", {})
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if field in cur_meta:
                meta[field] = cur_meta[field]
            else:
                meta.pop(field, None)
        result["apiVersion"] = rtype.api_version()
        result["kind"] = rtype.kind
        if cur_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or ()) - set(cur_meta.get("finalizers") or ())
            if added:
                raise ApiError.invalid(
                    rtype,
                    name,
                    [
                        _field_error(
                            "metadata.finalizers",
                            "no new finalizers can be added if the object is "
                            f"being deleted, found new finalizers {sorted(added)}",
                            type_="Forbidden",
                        )
                    ],
                )
        _drop_empty_metadata(meta)
        if subresource != "status":
            self._normalize(rtype, result, current)
        result = self._admit(rtype, result, current)
        meta = result["metadata"]
        if result == current:
            return current  # a no-op write changes nothing: same resourceVersion, no event
        if rtype.has_generation and _spec_of(rtype, result) != _spec_of(rtype, current):
            meta["generation"] = int(cur_meta.get("generation", 0)) + 1
        if dry_run:
            return result
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._commit(rtype, "DELETED", current, result)
            self._after_removal(rtype, result)
        else:
            self._commit(rtype, "MODIFIED", current, result)
            if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions") and not meta.get(
                "deletionTimestamp"
            ):
                self._register(type_from_crd(result))
        return result

    def _delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Delete per DeleteOptions; returns the object and whether it is gone already."""
        options = options or {}
        namespace = namespace if rtype.namespaced else None
        current = self._stored(rtype, namespace, name)
        if current is None:
            raise ApiError.not_found(rtype, name)
        meta = current["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise ApiError.conflict(
                rtype,
                name,
                "Precondition failed: UID in precondition: "
                f"{preconditions['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if (
            preconditions.get("resourceVersion")
            and str(preconditions["resourceVersion"]) != meta["resourceVersion"]
        ):
            raise ApiError.conflict(
                rtype,
                name,
                "Precondition failed: ResourceVersion in "
                f"precondition: {preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is True:
            policy = "Orphan"
        policy = policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise ApiError.bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
        grace = options.get("gracePeriodSeconds")
        is_pod = rtype.key == ("", "pods")
        if is_pod and grace is None:
            grace = int((current.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        graceful = is_pod and self.graceful_pod_deletion and int(grace or 0) > 0
        if options.get("dryRun"):
            return current, False
        finalizers = list(meta.get("finalizers") or ())

        if meta.get("deletionTimestamp"):
            # Already being deleted: only a pod's grace period can be cut short (to 0).
            if not (is_pod and int(grace or 0) == 0 and meta.get("deletionGracePeriodSeconds")):
                return current, False
            new = copy.deepcopy(current)
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["resourceVersion"] = self._next_rv()
            if finalizers:
                self._commit(rtype, "MODIFIED", current, new)
                return new, False
            self._commit(rtype, "DELETED", current, new)
            return new, True

        new = copy.deepcopy(current)
        new_meta = new["metadata"]
        if rtype.key == ("", "namespaces"):
            if name in ("default", "kube-system", "kube-public"):
                raise ApiError.forbidden(rtype, name, "this namespace may not be deleted")
            # The namespace controller empties it, then removes it (see _gc_pass).
            new_meta["deletionTimestamp"] = now_iso()
            new_meta["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            new_meta["resourceVersion"] = self._next_rv()
            self._commit(rtype, "MODIFIED", current, new)
            return new, False
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if finalizers or graceful:
            seconds = int(grace or 0) if graceful else 0
            new_meta["deletionTimestamp"] = now_iso(seconds)
            new_meta["deletionGracePeriodSeconds"] = seconds
            if finalizers:
                new_meta["finalizers"] = finalizers
            new_meta["resourceVersion"] = self._next_rv()
            self._commit(rtype, "MODIFIED", current, new)
            return new, False
        new_meta["resourceVersion"] = self._next_rv()
        self._commit(rtype, "DELETED", current, new)
        self._after_removal(rtype, new)
        return new, True

    def _after_removal(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unregister(type_from_crd(obj).key)

    def _list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        label_selector: selectors.LabelSelector | None = None,
        field_selector: selectors.FieldSelector | None = None,
    ) -> list[dict[str, Any]]:
        match = self._matcher(rtype, namespace, None, label_selector, field_selector)
        return [obj for obj in self._items(rtype, namespace) if match(obj)]

    def _matcher(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str | None,
        label_selector: selectors.LabelSelector | None,
        field_selector: selectors.FieldSelector | None,
    ) -> Callable[[dict[str, Any]], bool]:
        for path in field_selector.paths if field_selector else ():
            if not rtype.supports_field(path):
                raise ApiError.bad_request(f"field label not supported: {path}")

        def match(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            if namespace is not None and rtype.namespaced and meta.get("namespace") != namespace:
                return False
            if name is not None and meta.get("name") != name:
                return False
            if label_selector and not label_selector.matches(meta.get("labels")):
                return False
            return not field_selector or field_selector.matches(
                lambda path: selectors.get_field(obj, path)
            )

        return match

    # ------------------------------------------------------------------ garbage collection

    def _schedule_gc(self) -> None:
        if self._gc_pending:
            return
        self._gc_pending = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # at construction: no loop yet, collect right away
            self._collect_garbage()
        else:
            loop.call_soon(self._collect_garbage)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        result = []
        for key, store in self._live.items():
            rtype = self._types.get(key)
            if rtype is None:
                continue
            for obj in store.values():
                refs = obj["metadata"].get("ownerReferences") or ()
                if any(ref.get("uid") == uid for ref in refs):
                    result.append((rtype, obj))
        return result

    def _collect_garbage(self) -> None:
        """One pass of the garbage collector and the namespace/CRD cleanup controllers."""
        self._gc_pending = False
        try:
            self._gc_pass()
        except Exception as exc:  # pragma: no cover - a bug here must surface in tests
            log.exception("garbage collection failed")
            self.internal_errors.append(exc)

    def _gc_pass(self) -> None:
        def remove_finalizer(rtype: ResourceType, obj: dict[str, Any], finalizer: str) -> None:
            meta = obj["metadata"]

            def mutate(o: dict[str, Any]) -> dict[str, Any]:
                o["metadata"]["finalizers"] = [
                    f for f in o["metadata"].get("finalizers") or () if f != finalizer
                ]
                return o

            with contextlib.suppress(ApiError):
                self._update(rtype, meta.get("namespace"), meta["name"], mutate)

        def delete(rtype: ResourceType, obj: dict[str, Any], policy: str = "Background") -> None:
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return
            with contextlib.suppress(ApiError):
                self._delete(
                    rtype, meta.get("namespace"), meta["name"], {"propagationPolicy": policy}
                )

        for key in list(self._live):
            rtype = self._types.get(key)
            if rtype is None:
                continue
            for obj in list(self._live[key].values()):
                meta = obj["metadata"]
                finalizers = meta.get("finalizers") or ()
                if meta.get("deletionTimestamp"):
                    uid = meta["uid"]
                    if "orphan" in finalizers:
                        for dep_type, dep in self._dependents(uid):

                            def strip(o: dict[str, Any], uid: str = uid) -> dict[str, Any]:
                                refs = [
                                    r
                                    for r in o["metadata"].pop("ownerReferences", ())
                                    if r.get("uid") != uid
                                ]
                                if refs:
                                    o["metadata"]["ownerReferences"] = refs
                                return o

                            with contextlib.suppress(ApiError):
                                self._update(
                                    dep_type,
                                    dep["metadata"].get("namespace"),
                                    dep["metadata"]["name"],
                                    strip,
                                )
                        remove_finalizer(rtype, obj, "orphan")
                    elif "foregroundDeletion" in finalizers:
                        dependents = self._dependents(uid)
                        for dep_type, dep in dependents:
                            delete(dep_type, dep, "Foreground")
                        if not dependents:
                            remove_finalizer(rtype, obj, "foregroundDeletion")
                    if key == ("", "namespaces"):
                        contents = [
                            (t, o)
                            for k, t in self._types.items()
                            if t.namespaced
                            for o in self._items(t, meta["name"])
                        ]
                        for dep_type, dep in contents:
                            delete(dep_type, dep)
                        if not contents and not finalizers:
                            new = copy.deepcopy(obj)
                            new["metadata"]["resourceVersion"] = self._next_rv()
                            self._commit(rtype, "DELETED", obj, new)
                    if (
                        key == ("apiextensions.k8s.io", "customresourcedefinitions")
                        and CRD_CLEANUP_FINALIZER in finalizers
                    ):
                        crd_type = self._types.get(type_from_crd(obj).key)
                        instances = self._items(crd_type) if crd_type else []
                        for inst in instances:
                            assert crd_type is not None
                            delete(crd_type, inst)
                        if not instances:
                            remove_finalizer(rtype, obj, CRD_CLEANUP_FINALIZER)
                refs = meta.get("ownerReferences") or ()
                if refs and not any(ref.get("uid") in self._uids for ref in refs):
                    delete(rtype, obj)

    # ------------------------------------------------------------------ public helpers

    @_threadsafe
    def add_admission(self, resource: ResourceType | str | kmock.resource, fn: AdmissionFn) -> None:
        """Register ``fn(new, old) -> obj`` (raise AdmissionError to reject) for a resource."""
        self._admission[self.resolve(resource).key].append(fn)

    @_threadsafe
    def remove_admission(
        self, resource: ResourceType | str | kmock.resource, fn: AdmissionFn
    ) -> None:
        self._admission[self.resolve(resource).key].remove(fn)

    @_threadsafe
    def break_watches(
        self, resource: ResourceType | str | kmock.resource, during: Callable[[], Any] | None = None
    ) -> None:
        """End every open watch of ``resource`` (as a dropped connection or an API server
        restart does), then run ``during`` in the server's loop before any watch can send
        again: e.g. a delete and ``compact()``, so a watcher resuming from its last
        resourceVersion gets 410 and must re-list to learn the object is gone."""
        key = self.resolve(resource).key
        self._watch_breaks[key] = self._watch_breaks.get(key, 0) + 1
        if during is not None:
            during()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @_threadsafe
    def compact(self) -> int:
        """Forget the watch history (as etcd compaction does); older resourceVersions get 410."""
        self._log.clear()
        self._compacted = self._rv
        return self._rv

    @_threadsafe
    def get(
        self, resource: ResourceType | str | kmock.resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        rtype = self.resolve(resource)
        obj = self._stored(rtype, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    @_threadsafe
    def list(
        self,
        resource: ResourceType | str | kmock.resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rtype = self.resolve(resource)
        items = self._list(
            rtype,
            namespace,
            selectors.parse_label_selector(label_selector),
            selectors.parse_field_selector(field_selector),
        )
        return copy.deepcopy(items)

    @_threadsafe
    def create(self, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        rtype = self.type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        return copy.deepcopy(self._create(rtype, namespace, dict(obj)))

    @_threadsafe
    def patch(
        self,
        resource: ResourceType | str | kmock.resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        json_patch: bool = False,
    ) -> dict[str, Any]:
        """Merge-patch (or JSON-patch) an object, as a client would."""
        rtype = self.resolve(resource)

        def mutate(cur: dict[str, Any]) -> Any:
            return (
                patching.json_patch(cur, patch) if json_patch else patching.merge_patch(cur, patch)
            )

        return copy.deepcopy(self._update(rtype, namespace, name, mutate, subresource=subresource))

    @_threadsafe
    def delete(
        self,
        resource: ResourceType | str | kmock.resource,
        namespace: str | None,
        name: str,
        **options: Any,
    ) -> dict[str, Any]:
        """Delete with DeleteOptions given as keywords (propagationPolicy=..., ...)."""
        obj, _ = self._delete(self.resolve(resource), namespace, name, options)
        return copy.deepcopy(obj)

    @_threadsafe
    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create, or replace the spec-ish parts of an existing object (a simple `kubectl apply`)."""
        rtype = self.type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        current = self._stored(rtype, meta.get("namespace") or "default", meta.get("name", ""))
        if current is None:
            return copy.deepcopy(self._create(rtype, meta.get("namespace"), dict(obj)))
        return copy.deepcopy(
            self._update(
                rtype,
                meta.get("namespace") or "default",
                meta["name"],
                lambda cur: patching.merge_patch(
                    cur, {k: v for k, v in obj.items() if k != "status"}
                ),
            )
        )

    def load(self, source: str | Path) -> builtins.list[dict[str, Any]]:
        """Apply every YAML document of a file, or of every *.yaml file of a folder."""
        path = Path(source)
        files = (
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
        return [self.apply(doc) for file in files for doc in _yaml_documents(file)]

    @_threadsafe
    def events_since(self, rv: int) -> builtins.list[WatchEvent]:
        return self._events_after(rv)

    def _events_after(self, rv: int) -> builtins.list[WatchEvent]:
        """Logged events newer than ``rv``, oldest first (scans only the new tail)."""
        newer = []
        for event in reversed(self._log):
            if event.rv <= rv:
                break
            newer.append(event)
        newer.reverse()
        return newer

    # ------------------------------------------------------------------ HTTP serving

    @property
    def url(self) -> str:  # type: ignore[override]
        if self._url is None:
            raise RuntimeError("the API server is not serving; use `async with api.serving()`")
        return self._url

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve HTTP in the running loop; yields the base URL."""
        self._loop = asyncio.get_running_loop()
        async with self:
            server = aiohttp.web.Server(self, handler_cancellation=True)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, host, port)
            await site.start()
            actual_port = runner.addresses[0][1]
            self._url = f"http://{host}:{actual_port}"
            try:
                yield self._url
            finally:
                self._closing.set()
                await asyncio.sleep(0)
                await runner.cleanup()
                self._url = None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Replaces kmock's RawHandler.__call__ only to parse URLs the way the API server routes
        # them (kmock 0.8 fails on /api/v1/namespaces and reads /api/v1/namespaces/x as a
        # namespace prefix), and to render errors as Kubernetes Status objects.
        body = await raw_request.read()
        try:
            request = self._parse_request(raw_request, body)
            plural = request.resource.plural if request.resource is not None else None
            self.request_counts[(raw_request.method, plural or "", request.subresource)] += 1
            if self.record_requests:
                self._requests.append(request)
            return await self._handle(request)
        except ApiError as exc:
            if exc.page_not_found:
                return aiohttp.web.Response(
                    status=404, text="404 page not found\n", content_type="text/plain"
                )
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the API emulator failed on %s %s", raw_request.method, raw_request.path)
            self.internal_errors.append(exc)
            if self._errors:
                self._errors[-1].append(exc)
            err = ApiError(
                500,
                "InternalError",
                f"Internal error occurred: {exc!r}",
                {"causes": [{"message": traceback.format_exc()}]},
            )
            return aiohttp.web.json_response(err.status(), status=500)

    def _parse_request(self, raw: aiohttp.web.BaseRequest, body: bytes) -> rendering.Request:
        route = parse_route(raw.path)
        method = enums.method(raw.method)
        params = dict(raw.query)
        text = body.decode("utf-8", errors="replace")
        data: Any = None
        if body:
            ctype = raw.headers.get("Content-Type", "").split(";")[0].strip().lower()
            try:
                data = yaml.safe_load(text) if ctype.endswith("yaml") else json.loads(text)
            except (ValueError, yaml.YAMLError) as exc:
                raise ApiError.bad_request(f"the request body is not valid JSON: {exc}") from exc
        action = None
        if route.kind == "resource":
            if method == enums.method.GET:
                watch = params.get("watch") in ("true", "1") or route.watch_path
                action = (
                    enums.action.WATCH
                    if watch
                    else enums.action.FETCH
                    if route.name
                    else enums.action.LIST
                )
            elif method == enums.method.POST:
                action = enums.action.CREATE
            elif method in (enums.method.PATCH, enums.method.PUT):
                action = enums.action.UPDATE
            elif method == enums.method.DELETE:
                action = enums.action.DELETE
        resource = None
        if route.group is not None:
            resource = kmock.resource(group=route.group, version=route.version, plural=route.plural)
        return rendering.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=params,
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=text,
            data=data,
            action=action,
            resource=resource,
            namespace=route.namespace,
            name=route.name,
            subresource=route.subresource,
        )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Reactions that tests add with kmock's DSL come first (fault injection, spying);
        # if none matches, the emulated API serves the request.
        with contextlib.suppress(NotImplementedError):
            return await apps.RawHandler._handle(self, request)
        return await self._serve(request)

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        route = parse_route(raw.path)
        method = request.method.value
        if raw.path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        if raw.path.startswith("/openapi/v3") and method == "GET":
            return aiohttp.web.json_response(self._openapi_v3(raw.path))
        if route.kind != "resource":
            if method != "GET":
                raise ApiError.method_not_allowed()
            return aiohttp.web.json_response(self._discovery(route, raw))
        assert route.group is not None
        assert route.plural is not None
        rtype = self.find_type(route.group, route.version, route.plural)
        if rtype is None and route.group and not self._serves_group(route.group):
            raise ApiError.page_not_found_error()
        if rtype is None:
            raise ApiError.no_route()
        if not rtype.namespaced and route.namespace is not None:
            raise ApiError.no_route()
        version = route.version or rtype.version
        params = dict(request.params)
        namespace, name, sub = route.namespace, route.name, route.subresource
        if sub is not None and sub not in rtype.subresources:
            raise ApiError.no_route()

        def out(obj: Mapping[str, Any], status: int = 200) -> aiohttp.web.Response:
            return aiohttp.web.json_response(self._present(rtype, obj, version), status=status)

        if method == "GET" and (request.action == enums.action.WATCH):
            return await self._api_watch(raw, rtype, version, namespace, name, params)
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        if method == "GET" and name is None:
            listing = self._api_list(rtype, version, namespace, params)
            if as_table:
                return aiohttp.web.json_response(
                    tables.table(
                        rtype,
                        listing["items"],
                        listing["metadata"]["resourceVersion"],
                        params.get("includeObject", "PartialObjectMetadata"),
                    )
                )
            return aiohttp.web.json_response(listing)
        if method == "GET" and sub == "log":
            return self._serve_log(rtype, namespace, name or "", params)
        if method == "GET" and sub == "scale":
            return aiohttp.web.json_response(
                self._scale_of(rtype, self._get_or_404(rtype, namespace, name or ""))
            )
        if method == "GET":
            obj = self._get_or_404(rtype, namespace, name or "")
            if as_table:
                return aiohttp.web.json_response(
                    tables.table(
                        rtype,
                        [self._present(rtype, obj, version)],
                        obj["metadata"]["resourceVersion"],
                        params.get("includeObject", "PartialObjectMetadata"),
                    )
                )
            return out(obj)
        dry_run = bool(params.get("dryRun"))
        if method == "POST" and name is None:
            if rtype.namespaced and namespace is None:
                raise ApiError.method_not_allowed()
            created = self._create(rtype, namespace, request.data, dry_run=dry_run)
            return out(created, 201)
        if method == "PATCH" and name is not None and _content_type(request) == APPLY_PATCH:
            return self._apply_patch(rtype, namespace, name, request, out, dry_run=dry_run)
        if method in ("PATCH", "PUT") and name is not None:
            mutate = self._mutation(request, method)
            if sub == "scale":
                return aiohttp.web.json_response(self._write_scale(rtype, namespace, name, mutate))
            updated = self._update(
                rtype,
                namespace,
                name,
                mutate,
                subresource=sub,
                replace=method == "PUT",
                dry_run=dry_run,
            )
            return out(updated)
        if method == "DELETE":
            options = dict(request.data) if isinstance(request.data, dict) else {}
            for key in ("propagationPolicy", "gracePeriodSeconds", "dryRun"):
                if key in params and key not in options:
                    options[key] = int(params[key]) if key == "gracePeriodSeconds" else params[key]
            if name is None:
                return aiohttp.web.json_response(
                    self._delete_collection(rtype, version, namespace, params, options)
                )
            obj, gone = self._delete(rtype, namespace, name, options)
            if gone and rtype.key != ("", "pods"):
                return aiohttp.web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            **ApiError._details(rtype, name),
                            "uid": obj["metadata"].get("uid"),
                        },
                    }
                )
            return out(obj)
        raise ApiError.method_not_allowed()

    def _apply_patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        request: rendering.Request,
        out: Callable[..., aiohttp.web.StreamResponse],
        *,
        dry_run: bool,
    ) -> aiohttp.web.StreamResponse:
        """Server-side apply (``patching.apply_patch``): creates the object when absent,
        else sets what the manager applies and removes what it applied before and no longer
        does. The last applied configuration per manager lives here, not in managedFields."""
        manager = request.params.get("fieldManager")
        if not manager:
            raise ApiError(400, "BadRequest", "PATCH: fieldManager is required for apply requests")
        data = request.data
        if not isinstance(data, dict):
            raise ApiError.bad_request("an apply patch must be an object")
        key = (rtype.key, namespace, name, manager)
        if self._stored(rtype, namespace, name) is None:
            created = self._create(rtype, namespace, copy.deepcopy(data), dry_run=dry_run)
            if not dry_run:
                self._applied[key] = copy.deepcopy(data)
            return out(created, 201)
        patch = patching.apply_patch(self._applied.get(key), data)
        updated = self._update(
            rtype,
            namespace,
            name,
            lambda current: patching.merge_patch(current, patch),
            dry_run=dry_run,
        )
        if not dry_run:
            self._applied[key] = copy.deepcopy(data)
        return out(updated)

    def _get_or_404(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._stored(rtype, namespace, name)
        if obj is None:
            raise ApiError.not_found(rtype, name)
        return obj

    def _present(self, rtype: ResourceType, obj: Mapping[str, Any], version: str) -> dict[str, Any]:
        """The object as served at the requested version (no conversion, like CRDs' None)."""
        return {**obj, "apiVersion": rtype.api_version(version)}

    def _mutation(self, request: rendering.Request, method: str) -> Callable[[Any], Any]:
        data = request.data
        if method == "PUT":
            if not isinstance(data, dict):
                raise ApiError.bad_request("the body of the request must be a JSON object")
            return lambda current: copy.deepcopy(data)
        ctype = _content_type(request)
        if ctype == "application/json-patch+json":
            return lambda current: patching.json_patch(current, data)
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            # Strategic merge is served as a JSON merge patch (no patchMergeKey list merging).
            if not isinstance(data, dict):
                raise ApiError.bad_request("a merge patch must be a JSON object")
            return lambda current: patching.merge_patch(current, data)
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: application/json-patch+json, application/merge-patch+json, "
            f"application/apply-patch+yaml, application/strategic-merge-patch+json "
            f"(got {ctype or 'none'})",
        )

    def _selectors(
        self, params: Mapping[str, str]
    ) -> tuple[selectors.LabelSelector, selectors.FieldSelector]:
        try:
            return (
                selectors.parse_label_selector(params.get("labelSelector")),
                selectors.parse_field_selector(params.get("fieldSelector")),
            )
        except selectors.SelectorError as exc:
            raise ApiError.bad_request(str(exc)) from exc

    def _api_list(
        self, rtype: ResourceType, version: str, namespace: str | None, params: Mapping[str, str]
    ) -> dict[str, Any]:
        label_sel, field_sel = self._selectors(params)
        items = self._list(rtype, namespace, label_sel, field_sel)
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        token = params.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                after = (state["ns"] or "", state["name"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError.bad_request(f"continue key is not valid: {exc}") from exc
            if int(state.get("rv", 0)) < self._compacted:
                raise ApiError.gone(
                    "The provided continue parameter is too old to display a "
                    "consistent list result. You can start a new list without "
                    "the continue parameter."
                )
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > after
            ]
        limit = int(params.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps(
                    {"rv": self._rv, "ns": last.get("namespace"), "name": last["name"]}
                ).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "apiVersion": rtype.api_version(version),
            "kind": rtype.list_kind,
            "metadata": meta,
            "items": [self._present(rtype, o, version) for o in items],
        }

    def _delete_collection(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        params: Mapping[str, str],
        options: Mapping[str, Any],
    ) -> dict[str, Any]:
        label_sel, field_sel = self._selectors(params)
        deleted = []
        for obj in list(self._list(rtype, namespace, label_sel, field_sel)):
            meta = obj["metadata"]
            with contextlib.suppress(ApiError):
                deleted.append(self._delete(rtype, meta.get("namespace"), meta["name"], options)[0])
        return {
            "apiVersion": rtype.api_version(version),
            "kind": rtype.list_kind,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [self._present(rtype, o, version) for o in deleted],
        }

    def _serve_log(
        self, rtype: ResourceType, namespace: str | None, name: str, params: Mapping[str, str]
    ) -> aiohttp.web.Response:
        self._get_or_404(rtype, namespace, name)
        if self.pod_logs is None:
            raise ApiError.bad_request(f'pod "{name}" has no logs: no kubelet runs it')
        text = self.pod_logs(
            namespace or "default",
            name,
            params.get("container"),
            params.get("previous") in ("true", "1"),
        )
        if params.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(params["tailLines"]) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    # ------------------------------------------------------------------ /scale

    def _scale_of(self, rtype: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        assert rtype.scale is not None
        meta = obj["metadata"]
        spec_replicas = _get_path(obj, rtype.scale.spec_replicas)
        status_replicas = _get_path(obj, rtype.scale.status_replicas)
        if rtype.scale.label_selector is None:
            selector = selector_string((obj.get("spec") or {}).get("selector"))
        else:
            selector = _get_path(obj, rtype.scale.label_selector) or ""
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": int(spec_replicas or 0)},
            "status": {"replicas": int(status_replicas or 0), "selector": selector},
        }

    def _write_scale(
        self, rtype: ResourceType, namespace: str | None, name: str, mutate: Callable[[Any], Any]
    ) -> dict[str, Any]:
        assert rtype.scale is not None
        paths = rtype.scale
        current = self._get_or_404(rtype, namespace, name)
        try:
            scale = mutate(self._scale_of(rtype, current))
        except patching.PatchFormatError as exc:
            raise ApiError.bad_request(str(exc)) from exc
        except patching.PatchError as exc:
            raise ApiError(422, "UnprocessableEntity", str(exc)) from exc
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError.invalid(
                rtype,
                name,
                [
                    _field_error(
                        "spec.replicas", "must be greater than or equal to 0", value=replicas
                    )
                ],
            )
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")

        def apply(obj: dict[str, Any]) -> dict[str, Any]:
            _set_path(obj, paths.spec_replicas, replicas)
            obj["metadata"]["resourceVersion"] = wanted_rv or obj["metadata"]["resourceVersion"]
            return obj

        updated = self._update(rtype, namespace, name, apply)
        return self._scale_of(rtype, updated)

    # ------------------------------------------------------------------ watch

    async def _api_watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        name: str | None,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        label_sel, field_sel = self._selectors(params)
        if name is None and field_sel:
            names = [
                r.value for r in field_sel.requirements if r.path == "metadata.name" and r.op == "="
            ]
            name = names[0] if len(names) == 1 else None
        match = self._matcher(rtype, namespace, name, label_sel, field_sel)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        send_initial = params.get("sendInitialEvents") in ("true", "1")
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        since = params.get("resourceVersion") or ""
        if since not in ("", "0"):
            try:
                cursor = int(since)
            except ValueError as exc:
                raise ApiError.bad_request(f"invalid resource version: {since!r}") from exc
        else:
            cursor = -1

        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        response.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        api_version = rtype.api_version(version)
        breaks = self._watch_breaks.get(rtype.key, 0)

        as_table = tables.wants_table(raw.headers.get("Accept", ""))

        async def send(event_type: str, obj: Mapping[str, Any]) -> None:
            if as_table and event_type in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.table(
                    rtype,
                    [obj],
                    obj["metadata"]["resourceVersion"],
                    params.get("includeObject", "PartialObjectMetadata"),
                )
            await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

        async def bookmark(annotations: Mapping[str, str] | None = None) -> None:
            meta: dict[str, Any] = {"resourceVersion": str(cursor)}
            if annotations:
                meta["annotations"] = dict(annotations)
            await send(
                "BOOKMARK", {"kind": rtype.kind, "apiVersion": api_version, "metadata": meta}
            )

        try:
            await response.prepare(raw)  # a client gone first (a cut connection): below
            if cursor < 0 or send_initial:
                # "Get State and Start at Most Recent": synthetic ADDED for what exists now.
                cursor = self._rv
                for obj in self._list(rtype, namespace):
                    if match(obj):
                        await send("ADDED", self._present(rtype, obj, version))
                if send_initial and bookmarks:
                    await bookmark({"k8s.io/initial-events-end": "true"})
            elif cursor < self._compacted:
                await send(
                    "ERROR",
                    ApiError.gone(
                        f"too old resource version: {cursor} ({self._compacted})"
                    ).status(),
                )
                return response
            next_bookmark = loop.time() + self.bookmark_interval
            while not self._closing.is_set():
                changed = self._changed
                head = self._rv
                if self._watch_breaks.get(rtype.key, 0) != breaks:
                    break  # break_watches(): the stream ends, sending nothing more
                if cursor < self._compacted:  # events this watch needs are forgotten
                    await send(
                        "ERROR",
                        ApiError.gone(
                            f"too old resource version: {cursor} ({self._compacted})"
                        ).status(),
                    )
                    return response
                for event in self._events_after(cursor):
                    if event.rtype_key == rtype.key:
                        translated = _translate(event, match)
                        if translated is not None:
                            await send(translated[0], self._present(rtype, translated[1], version))
                cursor = max(cursor, head)
                now = loop.time()
                if deadline is not None and now >= deadline:
                    if bookmarks:
                        await bookmark()
                    break
                if bookmarks and now >= next_bookmark:
                    await bookmark()
                    next_bookmark = now + self.bookmark_interval
                wait = next_bookmark - now if bookmarks else 3600.0
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if changed.is_set():
                    continue
                closing = asyncio.ensure_future(self._closing.wait())
                changed_wait = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait(
                        [closing, changed_wait],
                        timeout=max(wait, 0.0),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    closing.cancel()
                    changed_wait.cancel()
        except (ConnectionResetError, ConnectionError):
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # ------------------------------------------------------------------ discovery

    def _discovery(self, route: Route, raw: aiohttp.web.BaseRequest) -> dict[str, Any]:
        if route.kind == "root":
            paths = {"/api", "/api/v1", "/apis", "/version", "/healthz", "/readyz", "/livez"}
            for t in self._types.values():
                if t.group:
                    paths |= {f"/apis/{t.group}"} | {f"/apis/{t.group}/{v}" for v in t.versions}
            return {"paths": sorted(paths)}
        if route.kind == "api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": raw.host}
                ],
            }
        if route.kind == "apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    self._group(g)
                    for g in sorted({t.group for t in self._types.values() if t.group})
                ],
            }
        if route.kind == "group":
            assert route.group is not None
            if not self._serves_group(route.group):
                raise ApiError.page_not_found_error()
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group(route.group)}
        if route.kind == "version":
            types = [
                t
                for t in self._types.values()
                if t.group == route.group and route.version in t.versions
            ]
            if not types and route.group != "":
                raise ApiError.no_route()
            resources = []
            for t in sorted(types, key=lambda t: t.plural):
                resources.append(
                    {
                        "name": t.plural,
                        "singularName": t.singular,
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": list(STANDARD_VERBS),
                        **({"shortNames": list(t.short_names)} if t.short_names else {}),
                        **({"categories": list(t.categories)} if t.categories else {}),
                        "storageVersionHash": "",
                    }
                )
                for sub in sorted(t.subresources):
                    entry = {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": list(SUBRESOURCE_VERBS.get(sub, ("get",))),
                    }
                    if sub == "scale":
                        entry.update(group="autoscaling", version="v1", kind="Scale")
                    resources.append(entry)
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{route.group}/{route.version}"
                if route.group
                else str(route.version),
                "resources": resources,
            }
        path = raw.path
        if path == "/version":
            major, minor = self.server_version
            return {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{major}.{minor}.0",
                "gitCommit": "streamherd-emulator",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.23",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        raise ApiError.no_route()

    def _openapi_v3(self, path: str) -> dict[str, Any]:
        """A skeleton OpenAPI v3: paths and operations, no schemas.

        Enough for kubectl to see that PATCH/POST accept ``fieldValidation`` (so it leaves
        validation to the server instead of downloading schemas); nothing validates them here.
        """
        gvs = sorted({(t.group, v) for t in self._types.values() for v in t.versions})

        def gv_path(group: str, version: str) -> str:
            return f"apis/{group}/{version}" if group else f"api/{version}"

        if path.rstrip("/") == "/openapi/v3":
            return {
                "paths": {
                    gv_path(g, v): {
                        "serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}?hash={self._rv:016X}"
                    }
                    for g, v in gvs
                }
            }
        wanted = path.removeprefix("/openapi/v3/").strip("/")
        match = [(g, v) for g, v in gvs if gv_path(g, v) == wanted]
        if not match:
            raise ApiError.no_route()
        group, version = match[0]
        query = [
            {"name": name, "in": "query", "schema": {"type": "string"}}
            for name in ("dryRun", "fieldManager", "fieldValidation")
        ]
        paths: dict[str, Any] = {}
        for t in self._types.values():
            if t.group != group or version not in t.versions:
                continue
            gvk = {"group": group, "version": version, "kind": t.kind}
            base = (
                "/"
                + gv_path(group, version)
                + ("/namespaces/{namespace}" if t.namespaced else "")
                + f"/{t.plural}"
            )
            op = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": query,
                "responses": {"200": {"description": "OK"}},
            }
            paths[base] = {"get": {**op, "parameters": []}, "post": op}
            paths[base + "/{name}"] = {
                "get": {**op, "parameters": []},
                "put": op,
                "patch": op,
                "delete": {**op, "parameters": []},
            }
        return {
            "openapi": "3.0.0",
            "info": {
                "title": "Kubernetes (streamherd emulator)",
                "version": f"v{'.'.join(self.server_version)}.0",
            },
            "paths": paths,
            "components": {"schemas": {}},
        }

    def _group(self, group: str) -> dict[str, Any]:
        versions: list[str] = []
        preferred = None
        for t in self._types.values():
            if t.group == group:
                preferred = preferred or t.version
                versions += [v for v in t.versions if v not in versions]
        assert preferred is not None
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{preferred}", "version": preferred},
        }


def _drop_empty_metadata(meta: dict[str, Any]) -> None:
    """ObjectMeta's maps and lists are omitempty: empty ones vanish from the stored object."""
    for key in ("labels", "annotations", "finalizers", "ownerReferences", "managedFields"):
        if key in meta and not meta[key]:
            del meta[key]


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})


def _spec_of(rtype: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What generation tracks: everything but metadata (and status, if a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | (
        {"status"} if "status" in rtype.subresources else set()
    )
    return {k: v for k, v in obj.items() if k not in skip}


def _translate(
    event: WatchEvent, match: Callable[[dict[str, Any]], bool]
) -> tuple[str, dict[str, Any]] | None:
    """How a filtered watch sees a change: objects entering/leaving the filter are ADDED/DELETED."""
    if event.type == "ADDED":
        return ("ADDED", event.new) if match(event.new) else None
    if event.type == "DELETED":
        return (
            ("DELETED", event.new)
            if match(event.new) or (event.old is not None and match(event.old))
            else None
        )
    was = event.old is not None and match(event.old)
    now = match(event.new)
    if was and now:
        return ("MODIFIED", event.new)
    if now:
        return ("ADDED", event.new)
    if was:
        return ("DELETED", event.new)
    return None


def _get_path(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_yaml_cache: dict[tuple[str, float], list[dict[str, Any]]] = {}


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Parsed YAML documents of a file, cached by mtime (CRD files are parsed once per run)."""
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _yaml_cache:
        _yaml_cache[key] = [d for d in yaml.load_all(path.read_text(), Loader=_YAML_LOADER) if d]
    return copy.deepcopy(_yaml_cache[key])


def _content_type(request: rendering.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()
