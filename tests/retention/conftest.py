"""Retention's tests: real redis-server 7.0 and 8.2 (the gateway suite's fixtures), a real
Redis Cluster, and the operator through the local cluster (the suite-wide ``harness``)."""

from __future__ import annotations

from tests.gateway.conftest import gateway, r, server

__all__ = ["gateway", "r", "server"]  # fixtures, reused as they are
