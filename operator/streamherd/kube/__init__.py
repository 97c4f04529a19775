"""Every Kubernetes API call the operator makes: requests built as data, sent by one client."""

from streamherd.kube.client import Conflict, KubeClient, KubeError, NotFound

__all__ = ["Conflict", "KubeClient", "KubeError", "NotFound"]
