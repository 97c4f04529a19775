"""The operator's runtime: per-endpoint pollers, and the reconcile loops that kopf's thin
handlers call. It wires the gateway (Redis), kube (Kubernetes) and decisions (pure) together."""
