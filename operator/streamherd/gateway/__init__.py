"""The Redis gateway: every Redis command and Lua script the operator runs lives here."""

from streamherd.gateway.client import EnsuredGroup, GroupOutcome, RedisGateway, ScanState
from streamherd.gateway.endpoint import Endpoint, SecretMissing, TLSMaterial, resolve_endpoint
from streamherd.gateway.errors import GatewayError
from streamherd.gateway.pool import GatewayPool

__all__ = [
    "Endpoint",
    "EnsuredGroup",
    "GatewayError",
    "GatewayPool",
    "GroupOutcome",
    "RedisGateway",
    "ScanState",
    "SecretMissing",
    "TLSMaterial",
    "resolve_endpoint",
]
