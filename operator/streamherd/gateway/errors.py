"""Redis failures as typed problems the operator turns into conditions.

Messages name the endpoint by ``Endpoint.display`` only and never echo a credential.
"""

from __future__ import annotations

import ssl

from redis import exceptions as rx

from streamherd.gateway.endpoint import Endpoint
from streamherd.observations import EndpointProblem


class GatewayError(Exception):
    def __init__(self, problem: EndpointProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


def classify(exc: BaseException, endpoint: Endpoint) -> GatewayError:
    """Map a redis-py / socket / TLS exception to a GatewayError. The endpoint gives context:
    with TLS on, a reset while connecting is the server refusing our handshake; without a
    password, an authentication error means one is needed."""
    if isinstance(exc, GatewayError):
        return exc
    text = str(exc)
    where, tls = endpoint.display, endpoint.tls is not None
    if _is_tls(exc):
        return GatewayError(
            EndpointProblem.TLS_FAILED, f"TLS with {where} failed: {_first_line(text)}"
        )
    if tls and isinstance(exc, rx.ConnectionError) and ("reset by peer" in text or "EOF" in text):
        return GatewayError(
            EndpointProblem.TLS_FAILED,
            f"{where} closed the TLS connection while connecting: it may require a client "
            "certificate (spec.redis.tls.clientCertificateSecretRef)",
        )
    if isinstance(exc, rx.InvalidResponse):
        return GatewayError(
            EndpointProblem.UNREACHABLE,
            f"{where} answered, but not as Redis (wrong port, or TLS on one side only?)",
        )
    if isinstance(exc, rx.AuthenticationError) or text.startswith(
        ("WRONGPASS", "NOAUTH", "invalid password", "invalid username")
    ):
        if endpoint.password is None:
            hint = "Redis requires a password: set spec.redis.passwordSecretRef"
        else:
            hint = "check spec.redis.username and the password Secret"
        return GatewayError(
            EndpointProblem.AUTH_FAILED, f"authentication to {where} failed: {hint}"
        )
    if (
        isinstance(exc, rx.NoPermissionError)
        or text.startswith(("NOPERM", "ACL failure"))
        or "user executing the script can't run" in text
    ):
        return GatewayError(
            EndpointProblem.PERMISSION_DENIED,
            f"the Redis user lacks a permission on {where}: {_first_line(text)}",
        )
    if isinstance(exc, rx.ResponseError):
        if text.startswith("WRONGTYPE"):
            return GatewayError(EndpointProblem.WRONG_TYPE, f"a key on {where} is not a stream")
        if text.startswith("NOGROUP"):
            return GatewayError(EndpointProblem.GROUP_MISSING, _first_line(text))
        if text.startswith("CROSSSLOT"):
            return GatewayError(EndpointProblem.CROSS_SLOT, _first_line(text))
        return GatewayError(EndpointProblem.UNEXPECTED, f"{where}: {_first_line(text)}")
    if isinstance(
        exc, rx.ConnectionError | rx.TimeoutError | OSError | TimeoutError | rx.ClusterError
    ):
        return GatewayError(
            EndpointProblem.UNREACHABLE,
            f"cannot reach {where}: {_first_line(text) or type(exc).__name__}",
        )
    return GatewayError(
        EndpointProblem.UNEXPECTED, f"{where}: {type(exc).__name__}: {_first_line(text)}"
    )


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in str(seen) or "certificate" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
