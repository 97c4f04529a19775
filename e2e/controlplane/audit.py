"""Which RBAC rule each request used, from the API server's audit log (``ControlPlane(audit=
True)``): the proof that the chart's rules are minimal. Every request of the users under test is
matched against the rules bound to that user (a rule of a Role only in its namespace); what each
(rule, resource, verb) was used for is counted, and a grant no request used is reported.

A request counts once (its auditID), whatever stages were logged: a watch still open when the
log is read has only its ResponseStarted event. Requests without an objectRef (discovery:
``/api``, ``/apis``, ``/version``) are allowed to every authenticated user by the server's own
``system:discovery`` ClusterRole, not by ours: they are counted apart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Rule = Mapping[str, Any]


@dataclass(frozen=True)
class Binding:
    """The rules of one part of files/rbac.yaml (``operator``, ``leader``...) bound to a user,
    cluster-wide (``namespace`` None: a ClusterRoleBinding) or in one namespace."""

    part: str
    rules: Sequence[Rule]
    namespace: str | None = None


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource of one rule: what a request can use."""

    part: str
    rule: int
    api_group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        group = self.api_group or "core"
        return f"{self.part}[{self.rule}] {self.verb} {group}/{self.resource}"


@dataclass(frozen=True)
class Request:
    """What RBAC sees of one audited request."""

    user: str
    verb: str
    api_group: str
    resource: str  # with its subresource: "deployments/scale"
    namespace: str | None
    name: str | None
    code: int

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> Request | None:
        ref = event.get("objectRef")
        if not ref or "resource" not in ref:
            return None
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        return cls(
            user=event["user"]["username"],
            verb=event["verb"],
            api_group=ref.get("apiGroup", ""),
            resource=resource,
            namespace=ref.get("namespace"),
            name=ref.get("name"),
            code=int((event.get("responseStatus") or {}).get("code") or 0),
        )

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.api_group or 'core'}/{self.resource}{name}{where} -> {self.code}"


def grants(bindings: Iterable[Binding]) -> list[Grant]:
    return sorted(
        {
            Grant(b.part, i, group, resource, verb)
            for b in bindings
            for i, rule in enumerate(b.rules)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    )


def verbs(request: Request) -> tuple[str, ...]:
    """The verbs the authorizer checked: a server-side apply (or any patch) that created its
    object (201) is audited as ``patch`` but was also authorized as ``create``."""
    if request.verb == "patch" and request.code == 201:
        return ("patch", "create")
    return (request.verb,)


def used_grants(request: Request, bindings: Iterable[Binding]) -> list[Grant] | None:
    """The grants that allow ``request`` (RBAC's match: verb, API group, resource with its
    subresource, resourceNames when the rule has them, a Role's namespace); None when one of
    its verbs has none."""
    found = []
    for verb in verbs(request):
        of_verb = [
            Grant(b.part, i, request.api_group, request.resource, verb)
            for b in bindings
            if b.namespace is None or request.namespace == b.namespace
            for i, rule in enumerate(b.rules)
            if verb in rule["verbs"]
            and request.api_group in rule["apiGroups"]
            and request.resource in rule["resources"]
            and (not rule.get("resourceNames") or request.name in rule["resourceNames"])
        ]
        if not of_verb:
            return None
        found += of_verb
    return found


@dataclass
class Report:
    counts: Counter[Grant]
    denied: list[Request] = field(default_factory=list)  # 401/403 answers
    outside: list[Request] = field(default_factory=list)  # allowed by no rule of ours
    discovery: int = 0  # non-resource requests (system:discovery's)
    requests: int = 0

    @property
    def unused(self) -> list[Grant]:
        return sorted(g for g, n in self.counts.items() if n == 0)

    def lines(self) -> list[str]:
        out = [f"{self.requests} requests audited ({self.discovery} discovery, not our rules)"]
        out += [f"{n:6d}  {g}" for g, n in sorted(self.counts.items())]
        out += [f"DENIED  {r}" for r in self.denied]
        out += [f"OUTSIDE {r}" for r in self.outside]
        return out


def report(events: Iterable[Mapping[str, Any]], users: Mapping[str, Sequence[Binding]]) -> Report:
    """Count, for each grant bound to ``users`` (username -> bindings), the requests it
    allowed; a request several grants allow counts for each."""
    counts: Counter[Grant] = Counter({g: 0 for b in users.values() for g in grants(b)})
    result = Report(counts)
    seen: set[str] = set()
    for event in events:
        user = event["user"]["username"]
        if user not in users or event["auditID"] in seen:
            continue
        if event["stage"] not in ("ResponseStarted", "ResponseComplete"):
            continue  # Panic: the request is also in the server's log
        seen.add(event["auditID"])
        result.requests += 1
        request = Request.of(event)
        if request is None:
            result.discovery += 1
            continue
        if request.code in (401, 403):
            result.denied.append(request)
            continue
        used = used_grants(request, users[user])
        if used is None:
            result.outside.append(request)
        else:
            counts.update(used)
    return result


__all__ = ["Binding", "Grant", "Report", "Request", "grants", "report", "used_grants", "verbs"]
