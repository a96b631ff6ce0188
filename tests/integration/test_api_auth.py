"""The HTTP API's front door: login, tokens, errors, request ids, security headers, the spec."""

from __future__ import annotations

import gzip
import json

from tests.integration.api_client import ApiClient
from tests.integration.conftest import MailSystem


def test_login_me_refresh_logout(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    pair = client.login(alice.upper())  # addresses are case-insensitive
    assert pair["token_type"] == "bearer" and pair["user"]["email"] == alice and pair["expires_in"] > 0
    me = client.get("/api/v1/auth/me")
    assert me.status == 200 and me.json()["email"] == alice and me.json()["role"] == "user"
    refreshed = client.post("/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert refreshed.status == 200 and refreshed.json()["refresh_token"] != pair["refresh_token"]
    reused = client.post("/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert reused.status == 401 and reused.json()["error"] == "invalid_token"  # rotation: used up
    new_refresh = refreshed.json()["refresh_token"]
    assert client.post("/api/v1/auth/logout", {"refresh_token": new_refresh}).status == 204
    assert client.post("/api/v1/auth/refresh", {"refresh_token": new_refresh}).status == 401


def test_wrong_password_unknown_user_and_missing_token_are_401_json(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    for email, password in ((alice, "wrong"), (f"ghost@{domain}", "whatever")):
        response = client.post("/api/v1/auth/login", {"email": email, "password": password})
        assert response.status == 401
        body = response.json()
        assert body["error"] == "invalid_credentials" and body["request_id"] == response.headers["x-request-id"]
    anonymous = client.get("/api/v1/auth/me")
    assert anonymous.status == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    client.token = "not-a-jwt"
    assert client.get("/api/v1/auth/me").status == 401


def test_bad_input_is_400_naming_the_field_never_a_500(mail_system: MailSystem):
    client = ApiClient(mail_system)
    broken = client.post("/api/v1/auth/login", raw=b"{not json")
    assert broken.status == 400 and broken.json()["error"] == "bad_request"
    missing = client.post("/api/v1/auth/login", {"email": "a@b.test"})
    assert missing.status == 400 and "password" in missing.json()["message"]
    extra = client.post("/api/v1/auth/login", {"email": "a@b.test", "password": "x", "admin": True})
    assert extra.status == 400 and "admin" in extra.json()["message"]
    nowhere = client.get("/api/v1/no/such/route")
    assert nowhere.status == 404 and nowhere.json()["error"] == "not_found"
    assert "Traceback" not in nowhere.body.decode()


def test_api_tokens_act_as_their_owner_until_revoked(mail_system: MailSystem, domain: str):
    alice = f"alice@{domain}"
    mail_system.add_user(alice)
    client = ApiClient(mail_system)
    client.login(alice)
    created = client.post("/api/v1/auth/tokens", {"name": "backup script", "expires_in_days": 30})
    assert created.status == 201 and created.json()["token"].startswith("wm_")
    script = ApiClient(mail_system, created.json()["token"])
    assert script.get("/api/v1/auth/me").json()["email"] == alice
    listed = client.get("/api/v1/auth/tokens").json()
    assert [t["name"] for t in listed] == ["backup script"] and "token" not in listed[0]
    assert client.call("DELETE", f"/api/v1/auth/tokens/{created.json()['id']}").status == 204
    assert script.get("/api/v1/auth/me").status == 401
    assert client.call("DELETE", f"/api/v1/auth/tokens/{created.json()['id']}").status == 404


def test_request_ids_security_headers_and_gzip(mail_system: MailSystem):
    client = ApiClient(mail_system)
    echoed = client.get("/api/v1/healthz", headers={"X-Request-ID": "trace-123"})
    assert echoed.status == 200 and echoed.headers["x-request-id"] == "trace-123"
    generated = client.get("/api/v1/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["x-request-id"]) == 32
    for header in ("x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy"):
        assert header in echoed.headers
    spec = client.get("/api/v1/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert spec.headers.get("content-encoding") == "gzip"
    document = json.loads(gzip.decompress(spec.body))
    assert document["openapi"].startswith("3.") and "/api/v1/auth/login" in document["paths"]
    docs = client.get("/api/v1/docs")
    assert docs.status == 200 and b"/api/v1/auth/login" in docs.body


def test_readyz_checks_postgres_and_the_shards(mail_system: MailSystem):
    ready = ApiClient(mail_system).get("/api/v1/readyz")
    assert ready.status == 200
    assert ready.json()["checks"] == {"postgres": True, "shards": True, "redis": True}
