"""A deliberately plain HTTP client (stdlib only) for poking an API server in tests: the
emulator (plain HTTP), or the real control plane (HTTPS with a client certificate or a token)."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) else None

    @property
    def message(self) -> str | None:
        return self.body.get("message") if isinstance(self.body, dict) else None

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


class KubeHTTP:
    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if self.https else 80)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.token = token

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, **headers: str) -> dict[str, str]:
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, Any] | None = None,
    ) -> Reply:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        conn = self._connection(self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = self._headers(**{"Content-Type": content_type, "Accept": "application/json"})
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Reply(resp.status, parsed, resp.headers)  # names case-insensitive
        finally:
            conn.close()

    def get(self, path: str, **params: Any) -> Reply:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Reply:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, content_type: str = MERGE) -> Reply:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, body: Any = None, **params: Any) -> Reply:
        return self.request("DELETE", path, body, params=params or None)

    def watch(self, path: str, *, timeout: float = 5.0, **params: Any) -> Iterator[dict[str, Any]]:
        """Stream watch events (dicts) until the server ends the stream or ``timeout`` passes
        without an event (then TimeoutError)."""
        query = urllib.parse.urlencode({"watch": "true", **params})
        conn = self._connection(timeout)
        try:
            conn.request("GET", f"{path}?{query}", headers=self._headers(Accept="application/json"))
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"watch failed: {resp.status} {resp.read()!r}")
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
