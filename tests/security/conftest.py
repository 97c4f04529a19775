"""Certificates for the security tests: a CA, a server certificate for 127.0.0.1, one for
another name, and a client certificate (trustme)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from e2e.cluster.redis import TLSFiles


@dataclass(frozen=True)
class PKI:
    ca_pem: bytes
    client_cert: bytes
    client_key: bytes
    server: TLSFiles
    mutual: TLSFiles
    """The same server certificate, with client certificates required."""


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    ca = trustme.CA()
    folder: Path = tmp_path_factory.mktemp("security-pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("streamherd-client")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    files = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    return PKI(
        ca_pem=ca.cert_pem.bytes(),
        client_cert=client.cert_chain_pems[0].bytes(),
        client_key=client.private_key_pem.bytes(),
        server=TLSFiles(*files),
        mutual=TLSFiles(*files, require_client_cert=True),
    )
