"""Kubeconfig files that point clients (kopf, kubectl, the kubernetes client) at the emulator."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

CONTEXT = "streamherd-emulator"


def kubeconfig_dict(server: str, namespace: str = "default") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        # The emulator does not authenticate; a token keeps clients from asking for credentials.
        "users": [{"name": CONTEXT, "user": {"token": "streamherd-emulator-token"}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: str | os.PathLike[str], server: str, namespace: str = "default") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(server, namespace), sort_keys=False))
    path.chmod(0o600)
    return path
