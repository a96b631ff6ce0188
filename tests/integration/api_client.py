"""A small HTTP client for the API tests (stdlib only: what a script would use)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from tests.integration.conftest import TEST_PASSWORD, MailSystem


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class ApiClient:
    def __init__(self, system: MailSystem, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{system.http_port}"
        self.token = token

    def call(self, method: str, path: str, body=None, *, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Response(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

    def get(self, path: str, **kw) -> Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Response:
        return self.call("POST", path, body, **kw)

    def login(self, email: str, password: str = TEST_PASSWORD) -> dict:
        response = self.post("/api/v1/auth/login", {"email": email, "password": password})
        assert response.status == 200, response.body
        pair = response.json()
        self.token = pair["access_token"]
        return pair
