"""The operator's Kubernetes credentials, and how they are renewed: one source for the
operator's own client and for kopf's watches.

Loading is the official ``kubernetes`` package's (``kubernetes.config``, the same code kopf's
``login_via_client`` piggybacks on): in a pod, the projected service-account token (re-read
every minute, as client-go does: the kubelet rotates it well before it expires); elsewhere
``$KUBECONFIG`` / ``~/.kube/config`` with its tokens, ``tokenFile``, client certificates and
``exec`` credential plugins (EKS's ``aws eks get-token``, GKE's ``gke-gcloud-auth-plugin``;
re-run when the credential they returned expires).

Renewal is an aiohttp client middleware on every session we create (ours and the one kopf
is given through ``kopf.AiohttpSession``): each request carries the current
``Authorization``; a ``401`` reloads the credentials once (concurrent 401s share one reload)
and repeats the request with the new ones. kopf's own vault stays the fallback: a 401 that
survives the reload reaches kopf, which invalidates the session and logs in again (our
``@kopf.on.login`` handler makes a fresh session).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from streamherd import __version__

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_DIR_ENV = "STREAMHERD_SERVICE_ACCOUNT_DIR"
"""Where the pod's service-account token, CA and namespace are mounted (a projected volume
elsewhere than the default; tests run the in-cluster path from a temporary directory)."""
CHECK_EVERY = 60.0
"""Seconds between asking the loader whether its token changed (client-go re-reads a token
file every minute; an exec credential is re-run only when it has expired)."""
USER_AGENT = f"streamherd/{__version__}"


class CredentialsError(Exception):
    pass


def _in_cluster_dir() -> Path | None:
    directory = Path(os.environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (directory / "token").is_file():
        return directory
    return None


def _load(kubeconfig: str | None = None) -> tuple[Any, str | None]:
    """A fresh ``kubernetes.client.Configuration`` and the default namespace (blocking: run
    in a thread; an exec plugin is a subprocess). ``kubeconfig`` (else ``$KUBECONFIG`` as it
    is now, else ``~/.kube/config``) when not in a pod."""
    import kubernetes.client
    import kubernetes.config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = kubernetes.client.Configuration()
    directory = None if kubeconfig else _in_cluster_dir()  # a kubeconfig given goes first
    if directory is not None:
        InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=str(directory / "token"),
            cert_filename=str(directory / "ca.crt"),
            try_refresh_token=True,
        ).load_and_set(configuration)
        namespace_file = directory / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
        return configuration, namespace
    # The package reads $KUBECONFIG once, at import: read it at each load instead.
    config_file = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file, client_configuration=configuration, persist_config=False
        )
        _, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=config_file
        )
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise CredentialsError(
            f"no Kubernetes credentials: not in a pod, and no usable kubeconfig ({exc})"
        ) from exc
    namespace = ((active or {}).get("context") or {}).get("namespace")
    return configuration, namespace


def _authorization(configuration: Any) -> str | None:
    """The Authorization header value (blocking: the loader's refresh hook may re-read a
    token file or re-run an exec plugin)."""
    value = configuration.get_api_key_with_prefix("BearerToken")
    return str(value) if value else None


class Credentials:
    """The current credentials: server, TLS, the Authorization header; renewed on 401."""

    def __init__(
        self,
        loader: Callable[[], tuple[Any, str | None]] | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
    ) -> None:
        path = os.fspath(kubeconfig) if kubeconfig is not None else None
        self._loader = loader or functools.partial(_load, path)
        self._configuration: Any = None
        self.default_namespace: str | None = None
        self._header: str | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self.renewals = 0
        """How many times a 401 made us reload (tests and logs)."""
        self.generation = 0
        self._logins = 0
        """Raised by kopf's re-login: a client whose session is older makes a new one (new
        TLS client certificates, a new server address). A 401's renewal needs no new session:
        the middleware sets the current Authorization on every request."""

    async def ensure(self) -> None:
        """Load the credentials the first time they are needed."""
        if self._configuration is None:
            async with self._lock:
                if self._configuration is None:
                    await self._reload()

    async def _reload(self) -> None:
        configuration, namespace = await asyncio.to_thread(self._loader)
        header = await asyncio.to_thread(_authorization, configuration)
        self._configuration, self.default_namespace = configuration, namespace
        self._header, self._checked_at = header, time.monotonic()

    @property
    def server(self) -> str:
        assert self._configuration is not None, "call ensure() first"
        return str(self._configuration.host).rstrip("/")

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS for the API server (False for plain HTTP)."""
        c = self._configuration
        assert c is not None, "call ensure() first"
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=c.ssl_ca_cert or None)
        if c.cert_file and c.key_file:
            context.load_cert_chain(c.cert_file, c.key_file)
        if not c.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def authorization(self) -> str | None:
        """The header for the next request; at most once a minute, asks the loader whether
        the token changed (a rotated token file, an exec credential about to expire)."""
        await self.ensure()
        if time.monotonic() - self._checked_at >= CHECK_EVERY:
            self._checked_at = time.monotonic()
            try:
                self._header = await asyncio.to_thread(_authorization, self._configuration)
            except Exception as exc:  # an exec plugin failing: keep what we have until a 401
                logger.warning("refreshing the Kubernetes credentials failed: %s", exc)
        return self._header

    async def renew(self, rejected: str | None) -> bool:
        """The API server refused ``rejected`` (401): reload everything (kubeconfig, token
        file, exec plugin) unless another request already did. True when the header changed."""
        async with self._lock:
            if self._header != rejected:
                return True  # renewed meanwhile by a concurrent 401
            try:
                await self._reload()
            except Exception as exc:
                logger.warning("renewing the Kubernetes credentials after a 401 failed: %s", exc)
                return False
            self.renewals += 1
            changed = self._header != rejected
            logger.info(
                "Kubernetes credentials renewed after a 401 (%s)",
                "new token" if changed else "the same token: the API server refuses it",
            )
            return changed

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Authorization on every request; one renewal and a repeat on a 401."""
        header = await self.authorization()
        if header:
            request.headers["Authorization"] = header
        response = await handler(request)
        if response.status != 401:
            return response
        if not await self.renew(header):
            return response  # nothing new to try: the caller sees the 401
        response.release()
        fresh = await self.authorization()
        if fresh:
            request.headers["Authorization"] = fresh
        return await handler(request)

    async def session(self, *, limit: int = 32, **options: Any) -> aiohttp.ClientSession:
        """An aiohttp session to the API server with these credentials (renewed as above)."""
        await self.ensure()
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context(), limit=limit),
            headers={"User-Agent": USER_AGENT},
            middlewares=(self.middleware,),
            **options,
        )

    async def kopf_login(self) -> kopf.AiohttpSession:
        """What our ``@kopf.on.login`` handler returns: a session of ours for kopf's watches
        and patches (no connection limit: every watch holds one). kopf logs in at start-up
        and again whenever its vault was invalidated (a 401 that survived our renewal): then
        the credentials are loaded afresh, which also makes our own client's next request
        build a new session (``generation``)."""
        self._logins += 1
        if self._logins == 1:  # start-up
            await self.ensure()
        else:
            async with self._lock:
                await self._reload()
                self.generation += 1
            logger.info("Kubernetes credentials reloaded for kopf's re-login")
        session = await self.session(limit=0)
        return kopf.AiohttpSession(
            aiohttp_session=session,
            server=self.server,
            default_namespace=self.default_namespace,
        )
