"""A real Kubernetes control plane on loopback, started the way controller-runtime's envtest
starts one: etcd, kube-apiserver and kube-controller-manager as processes in a temp dir, on free
ports, with generated certificates. No kubelet: ``e2e.cluster.kubelet.NodeAgent`` is the node.

- etcd: plain HTTP on 127.0.0.1, no fsync (a test cluster's data lives as long as the session).
- kube-apiserver: TLS with a generated CA (cryptography); client certificates for the admin
  (``system:masters``), the controller manager, the scheduler identity and the node; a
  service-account signing key; ``--authorization-mode=Node,RBAC``; the default admission
  plugins plus ``NodeRestriction`` (as kubeadm sets them) and
  ``OwnerReferencesPermissionEnforcement`` (as OpenShift does); service-account tokens not extended
  and capped at ``max_token_expiration``; API Priority and Fairness on, with the in-flight
  limits as flags (``max_requests_inflight``, ``max_mutating_requests_inflight``).
- kube-controller-manager: the Deployment, ReplicaSet, garbage-collector, namespace,
  serviceaccount(-token), root-CA publisher, Job and CronJob controllers, each with its own
  service account (``--use-service-account-credentials``), so RBAC applies to them too.

``kubeconfig()`` is the admin's; ``service_account_kubeconfig(ns, name, expiry)`` makes one for
a ServiceAccount through the TokenRequest API (which refuses less than 10 minutes), and
``signed_service_account_token`` signs a shorter-lived one with the cluster's own key, with the
claims TokenRequest puts in (for tests of expiry that cannot wait 10 minutes).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster.client import KubeHTTP, Reply
from e2e.cluster.processes import wait_until
from e2e.cluster.redis import free_port
from e2e.controlplane import build

CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "job-controller",
    "cronjob-controller",
)
NODE_NAME = "streamherd-node"
CONTEXT = "streamherd-control-plane"


@dataclass(frozen=True)
class Credentials:
    """A client identity: a certificate and key (PEM files) or a bearer token."""

    name: str
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None

    def kubeconfig_user(self) -> dict[str, str]:
        if self.token is not None:
            return {"token": self.token}
        assert self.cert_file is not None and self.key_file is not None
        return {
            "client-certificate-data": _b64(self.cert_file.read_bytes()),
            "client-key-data": _b64(self.key_file.read_bytes()),
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _issue(
    common_name: str,
    organization: str | None,
    *,
    signer: tuple[Any, Any] | None = None,
    hosts: Sequence[str] = (),
    ca: bool = False,
) -> tuple[Any, Any]:
    """An EC key and an X.509 certificate for it: a self-signed CA (``ca``), a server
    certificate for ``hosts``, or a client certificate whose CN/O are the Kubernetes user and
    group. (trustme's leaves carry an empty critical SAN for clients, which Go refuses.)"""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(names)
    issuer_key, issuer_cert = signer if signer else (key, None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def _write_pair(directory: Path, name: str, key: Any, cert: Any) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# What the audit log records: the requests of ServiceAccounts (the operator's and the
# janitor's), not the controllers' (kube-system) nor the certificate users'.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


@dataclass
class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    binaries: Path | None = None
    max_requests_inflight: int = 40
    max_mutating_requests_inflight: int = 20
    max_token_expiration: str = "1h"
    extra_apiserver_flags: Sequence[str] = ()
    # The audit log (``audit_events()``): every request of a ServiceAccount outside
    # kube-system, at Metadata level. Off by default: the session's plane serves every test.
    audit: bool = False
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="control-plane-")))
    host: str = "127.0.0.1"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_in: float = 0.0  # seconds from start() to a ready API server and controllers

    def __post_init__(self) -> None:
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.url = f"https://{self.host}:{self.port}"
        self.issuer = f"https://{self.host}:{self.port}"

    # ------------------------------------------------------------------ certificates

    def _write_certificates(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        pki = self.base_dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = _issue("streamherd-test-ca", None, ca=True)
        self.ca_file = _write_pair(pki, "ca", ca_key, ca_cert)[0]
        serving = _issue(
            "kube-apiserver",
            None,
            signer=(ca_key, ca_cert),
            hosts=[
                self.host,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        self.serving_cert, self.serving_key = _write_pair(pki, "apiserver", *serving)
        self.identities: dict[str, Credentials] = {}
        for name, common_name, org in (
            ("admin", "streamherd-admin", "system:masters"),
            ("controller-manager", "system:kube-controller-manager", None),
            ("scheduler", "system:kube-scheduler", None),
            ("node", f"system:node:{NODE_NAME}", "system:nodes"),
        ):
            leaf = _issue(common_name, org, signer=(ca_key, ca_cert))
            cert, key = _write_pair(pki, name, *leaf)
            self.identities[name] = Credentials(name, cert_file=cert, key_file=key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key_file, self.sa_pub_file = pki / "sa.key", pki / "sa.pub"
        self.sa_key_file.write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        self.sa_pub_file.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self._sa_key = sa_key

    # ------------------------------------------------------------------ processes

    def start(self, timeout: float = 120.0) -> ControlPlane:
        started = time.monotonic()
        binaries = self.binaries or build.built()
        if binaries is None:
            raise RuntimeError(
                "the control plane is not built: run `make control-plane` "
                f"(expected in {build.cache_dir()})"
            )
        self.binaries = binaries
        self._write_certificates()
        try:
            self._start_etcd()
            self._start_apiserver(timeout)
            self.write_kubeconfig(
                self.base_dir / "controller-manager.kubeconfig", "controller-manager"
            )
            self._start_controller_manager(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        return self

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log = open(self.base_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
            )
        finally:
            log.close()
        self.processes[name] = proc
        return proc

    def logs(self, name: str) -> str:
        path = self.base_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _check_running(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.logs(name)[-4000:]}")

    def _start_etcd(self) -> None:
        assert self.binaries is not None
        client = f"http://{self.host}:{self.etcd_port}"
        peer = f"http://{self.host}:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.binaries / "etcd"),
                "--name=default",
                f"--data-dir={self.base_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, timeout: float) -> None:
        assert self.binaries is not None
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers=http://{self.host}:{self.etcd_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.base_dir / 'pki'}",
                f"--tls-cert-file={self.serving_cert}",
                f"--tls-private-key-file={self.serving_key}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=Node,RBAC",
                # OwnerReferencesPermissionEnforcement as OpenShift enables it: an owner
                # reference with blockOwnerDeletion needs `update` on the owner's finalizers.
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                "--allow-privileged=true",
                "--service-cluster-ip-range=10.96.0.0/24",
                # The "kubernetes" Service cannot point at a loopback address: no endpoints.
                "--endpoint-reconciler-type=none",
                f"--service-account-issuer={self.issuer}",
                f"--service-account-key-file={self.sa_pub_file}",
                f"--service-account-signing-key-file={self.sa_key_file}",
                f"--service-account-max-token-expiration={self.max_token_expiration}",
                "--service-account-extend-token-expiration=false",
                "--enable-priority-and-fairness=true",
                f"--max-requests-inflight={self.max_requests_inflight}",
                f"--max-mutating-requests-inflight={self.max_mutating_requests_inflight}",
                "--profiling=false",
                *self._audit_flags(),
                *self.extra_apiserver_flags,
            ],
        )

        def ready() -> bool:
            self._check_running("etcd")
            self._check_running("kube-apiserver")
            try:
                return self.request("GET", "/readyz").status == 200
            except OSError:
                return False

        wait_until(
            ready,
            timeout,
            interval=0.2,
            message=lambda: f"kube-apiserver not ready:\n{self.logs('kube-apiserver')[-4000:]}",
        )

    def _start_controller_manager(self, timeout: float) -> None:
        assert self.binaries is not None
        kubeconfig = self.base_dir / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_key_file}",
                f"--root-ca-file={self.ca_file}",
                "--cluster-signing-duration=1h",
                # A test session creates and deletes namespaces all the time: sync them fast.
                "--namespace-sync-period=10s",
                "--concurrent-namespace-syncs=5",
                "--concurrent-gc-syncs=10",
            ],
        )

        def serving() -> bool:
            # The serviceaccount controller creates "default" in every namespace: the sign that
            # the controllers run (pods cannot be created in a namespace without it).
            self._check_running("kube-controller-manager")
            reply = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return reply.status == 200

        wait_until(
            serving,
            timeout,
            interval=0.2,
            message=lambda: (
                f"kube-controller-manager not working:\n"
                f"{self.logs('kube-controller-manager')[-4000:]}"
            ),
        )

    # ------------------------------------------------------------------ the audit log

    @property
    def audit_log(self) -> Path:
        return self.base_dir / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.base_dir / "audit-policy.yaml"
        policy.write_text(json.dumps(AUDIT_POLICY))  # JSON is YAML
        # The blocking log backend writes each event before the request's handler returns.
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=0",  # never rotated: the test reads it whole
        ]

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events (``audit=True``): one per request and stage (ResponseStarted
        for a watch when it begins, ResponseComplete when any request ends)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process (controllers first, etcd last), SIGKILL after ``grace``."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ clients

    def ssl_context(self, identity: str | None = "admin") -> ssl.SSLContext:
        """Trusts the cluster's CA; presents ``identity``'s client certificate (None: none)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if identity is not None:
            creds = self.identities[identity]
            context.load_cert_chain(str(creds.cert_file), str(creds.key_file))
        return context

    def client(
        self, identity: str | None = "admin", token: str | None = None, timeout: float = 10.0
    ) -> KubeHTTP:
        """A plain HTTP client as ``identity`` (a client certificate) or with a bearer token."""
        context = self.ssl_context(None if token is not None else identity)
        return KubeHTTP(self.url, timeout, ssl_context=context, token=token)

    def request(self, method: str, path: str, body: Any = None, **options: Any) -> Reply:
        """One request as the admin."""
        return self.client().request(method, path, body, **options)

    def kubeconfig_dict(
        self, credentials: Credentials | str = "admin", namespace: str = "default"
    ) -> dict[str, Any]:
        creds = self.identities[credentials] if isinstance(credentials, str) else credentials
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.ca_file.read_bytes()),
                    },
                }
            ],
            "users": [{"name": creds.name, "user": creds.kubeconfig_user()}],
            "contexts": [
                {
                    "name": CONTEXT,
                    "context": {"cluster": CONTEXT, "user": creds.name, "namespace": namespace},
                }
            ],
            "current-context": CONTEXT,
        }

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        credentials: Credentials | str = "admin",
        namespace: str = "default",
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            yaml.safe_dump(self.kubeconfig_dict(credentials, namespace), sort_keys=False)
        )
        path.chmod(0o600)
        return path

    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``system:masters``)."""
        path = self.base_dir / "admin.kubeconfig"
        return path if path.exists() else self.write_kubeconfig(path)

    def request_token(
        self, namespace: str, service_account: str, expiration_seconds: int = 3600
    ) -> str:
        """A token for the ServiceAccount through the TokenRequest API (>= 600 s)."""
        reply = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        if reply.status != 201:
            raise RuntimeError(f"TokenRequest failed: {reply.status} {reply.body}")
        return str(reply.body["status"]["token"])

    def service_account_kubeconfig(
        self,
        path: str | os.PathLike[str],
        namespace: str,
        service_account: str,
        expiration_seconds: int = 3600,
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token)."""
        token = self.request_token(namespace, service_account, expiration_seconds)
        creds = Credentials(f"{namespace}-{service_account}", token=token)
        return self.write_kubeconfig(path, creds, namespace)

    def signed_service_account_token(
        self, namespace: str, service_account: str, valid_for: float
    ) -> str:
        """A token like TokenRequest's (same issuer, audience, claims and key id) that the API
        server refuses ``valid_for`` seconds from now; TokenRequest refuses lifetimes under
        10 minutes. The server allows a minute of clock skew (go-jose's DefaultLeeway) past
        ``exp``, so ``exp`` is set that much earlier."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        reply = self.request(
            "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}"
        )
        if reply.status != 200:
            raise RuntimeError(f"no ServiceAccount {namespace}/{service_account}: {reply.body}")
        template = self.request_token(namespace, service_account, 600)
        header = json.loads(base64.urlsafe_b64decode(template.split(".")[0] + "=="))
        now = int(time.time())
        claims = {
            "aud": [self.issuer],
            "exp": now + int(valid_for) - 60,
            "iat": now - 60,
            "nbf": now - 60,
            "iss": self.issuer,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {
                    "name": service_account,
                    "uid": reply.body["metadata"]["uid"],
                },
            },
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self._sa_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    # ------------------------------------------------------------------ the node

    def start_node_agent(self, **options: Any) -> Any:
        """The node: an :class:`e2e.cluster.node_agent.NodeAgent` as ``system:node:<name>``
        (and ``system:kube-scheduler`` for binding), started."""
        from e2e.cluster.node_agent import NodeAgent

        options.setdefault("node_name", NODE_NAME)
        return NodeAgent(
            self.url,
            node_context=self.ssl_context("node"),
            scheduler_context=self.ssl_context("scheduler"),
            **options,
        ).start()

    # ------------------------------------------------------------------ namespaces

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        reply = self.request(
            "POST",
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            },
        )
        if reply.status not in (201, 409):
            raise RuntimeError(f"cannot create namespace {name}: {reply.status} {reply.body}")
        # Pods need the namespace's "default" ServiceAccount (the ServiceAccount admission
        # plugin refuses them before the serviceaccount controller made it).
        wait_until(
            lambda: (
                self.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default").status
                == 200
            ),
            30,
            interval=0.05,
            message=f"no default ServiceAccount in namespace {name}",
        )


OUR_RESOURCES = ("redisstreams", "consumergroups", "retentionpolicies")


def release_namespace(plane: ControlPlane, namespace: str) -> None:
    """Delete a test's namespace without waiting: first drop the finalizers of our resources
    there (the operator that would remove them has stopped), so the namespace can go."""
    for plural in OUR_RESOURCES:
        base = f"/apis/streamherd.io/v1alpha1/namespaces/{namespace}/{plural}"
        listed = plane.request("GET", base)
        for item in (listed.body or {}).get("items") or () if listed.status == 200 else ():
            if item["metadata"].get("finalizers"):
                plane.request(
                    "PATCH",
                    f"{base}/{item['metadata']['name']}",
                    {"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json",
                )
    plane.request("DELETE", f"/api/v1/namespaces/{namespace}")
    # e2e.controlplane.rbac binds the test's operator cluster-wide too (kopf's observers).
    plane.request(
        "DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/streamherd-{namespace}"
    )


__all__ = ["CONTROLLERS", "NODE_NAME", "ControlPlane", "Credentials", "release_namespace"]
