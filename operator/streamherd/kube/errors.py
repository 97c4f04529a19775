"""What can go wrong talking to the Kubernetes API, typed: each error names the request as
RBAC sees it (verb, resource, namespace), so a condition can say what failed and what to
grant, never only a log line."""

from __future__ import annotations

from streamherd.kube.requests import Request


class KubeError(Exception):
    """The API server answered ``status`` (or, with 0, never answered) to ``request``."""

    def __init__(
        self, status: int, reason: str, message: str, request: Request | None = None
    ) -> None:
        what = f" ({request.describe()})" if request is not None else ""
        super().__init__(f"{status} {reason}: {message}{what}")
        self.status, self.reason, self.message, self.request = status, reason, message, request

    @property
    def action(self) -> str:
        """What was attempted, as RBAC names it: "patch deployments/scale in namespace 'x'"."""
        return self.request.describe() if self.request is not None else "a request"


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class Gone(KubeError):
    """410: a watch asked for a resourceVersion the server no longer has: list again."""


class Invalid(KubeError):
    """422: the object was refused (schema, admission)."""


class Forbidden(KubeError):
    """403: RBAC (or an admission plugin) refuses the operator this request."""


class Unauthorized(KubeError):
    """401 even after the credentials were renewed: the operator cannot authenticate."""


class Unavailable(KubeError):
    """The API server throttled (429), failed (5xx) or did not answer in time, through every
    retry the request was allowed."""


class WriteDeferred(Exception):
    """A deferrable write found no room in the write budget: nothing was sent; write it later
    (status numbers, an Event's repeat count)."""

    def __init__(self, request: Request) -> None:
        super().__init__(f"deferred: {request.describe()} (write budget)")
        self.request = request


BY_STATUS: dict[int, type[KubeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def error_for(status: int, reason: str, message: str, request: Request) -> KubeError:
    cls = BY_STATUS.get(status, Unavailable if status == 429 or status >= 500 else KubeError)
    return cls(status, reason, message, request)
