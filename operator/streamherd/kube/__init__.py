"""Every Kubernetes API call the operator makes: requests built as data, sent by one client."""

from streamherd.kube.auth import Credentials, CredentialsError
from streamherd.kube.budget import Limits, Priority
from streamherd.kube.client import KubeClient
from streamherd.kube.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Unauthorized,
    Unavailable,
    WriteDeferred,
)

__all__ = [
    "Conflict",
    "Credentials",
    "CredentialsError",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeClient",
    "KubeError",
    "Limits",
    "NotFound",
    "Priority",
    "Unauthorized",
    "Unavailable",
    "WriteDeferred",
]
