"""Kubernetes API failures as conditions, never only as log lines: a 403 names the verb and
resource to grant (``PermissionDenied``), a server that throttled or failed through every
retry says so (``ApiUnavailable``), anything else refused is ``ApiRejected``."""

from __future__ import annotations

from streamherd.api.status import ConditionStatus, ConditionType, Reason
from streamherd.decisions.conditions import Verdict
from streamherd.kube import Forbidden, KubeError, Unavailable


def api_problem(
    exc: KubeError, type_: ConditionType = ConditionType.READY, *, consequence: str = ""
) -> Verdict:
    """The condition ``exc`` gives; ``consequence`` says what the operator does not do
    because of it (", so it does not scale")."""
    if isinstance(exc, Forbidden):
        reason = Reason.PERMISSION_DENIED
        message = (
            f"the operator may not {exc.action}{consequence}: grant it to the operator's "
            f"ServiceAccount (README: RBAC per feature). The API server said: {exc.message}"
        )
    elif isinstance(exc, Unavailable):
        reason = Reason.API_UNAVAILABLE
        message = (
            f"the Kubernetes API did not serve {exc.action} ({exc.status} {exc.reason}) "
            f"through every retry{consequence}; retrying"
        )
    else:
        reason = Reason.API_REJECTED
        message = f"the Kubernetes API refused {exc.action}{consequence}: {exc.status} {exc.reason}: {exc.message}"
    return Verdict(type_, ConditionStatus.FALSE, reason, message[:4096])
