"""The administrative API: domains, users, aliases, system config, storage statistics, the audit log.

The authorization matrix runs every endpoint as four callers against domain A's objects: an admin
(of another domain), the owner of A, the owner of another domain B, and a plain user of A.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.integration.api_client import ApiClient
from tests.integration.conftest import MailSystem

API = "/api/v1"
NEW_PASSWORD = "a new long password"
ROLES = ("admin", "owner_a", "owner_b", "user_a")


def _token() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class World:
    system: MailSystem
    a: str
    a_id: int
    b: str
    b_id: int
    clients: dict[str, ApiClient]
    ids: dict[str, int]
    emails: dict[str, str]

    def as_(self, role: str) -> ApiClient:
        return self.clients[role]

    def new_user_in_a(self) -> int:
        return self.system.add_user(f"v{_token()}@{self.a}")

    def new_alias_in_a(self) -> int:
        source = f"al{_token()}@{self.a}"
        self.system.add_alias(source, [f"pat@{self.a}"])
        return self.system.fetch("SELECT id FROM aliases WHERE source = $1", source)[0]["id"]

    def new_domain(self) -> int:
        name = f"x{_token()}.test"
        self.system.add_domain(name)
        return domain_id(self.system, name)


def domain_id(system: MailSystem, name: str) -> int:
    return system.fetch("SELECT id FROM domains WHERE name = $1", name)[0]["id"]


def set_role(system: MailSystem, email: str, role: str) -> None:
    system.fetch("UPDATE users SET role = $2 WHERE email = $1", email, role)


def audit_rows(system: MailSystem, action: str, actor: str) -> list:
    return system.fetch(
        "SELECT * FROM audit_logs WHERE action = $1 AND actor_email = $2 ORDER BY id", action, actor
    )


@pytest.fixture(scope="module")
def world(mail_system: MailSystem) -> World:
    token = _token()
    a, b, c = f"a{token}.test", f"b{token}.test", f"c{token}.test"
    for name in (a, b, c):
        mail_system.add_domain(name)
    people = {"admin": f"boss@{c}", "owner_a": f"own@{a}", "owner_b": f"own@{b}", "user_a": f"pat@{a}"}
    ids = {role: mail_system.add_user(email) for role, email in people.items()}
    set_role(mail_system, people["admin"], "admin")
    set_role(mail_system, people["owner_a"], "owner")
    set_role(mail_system, people["owner_b"], "owner")
    ids["victim_a"] = mail_system.add_user(f"victim@{a}")
    clients = {}
    for role, email in people.items():
        clients[role] = ApiClient(mail_system)
        clients[role].login(email)
    return World(mail_system, a, domain_id(mail_system, a), b, domain_id(mail_system, b), clients, ids, people)


# --- the authorization matrix ----------------------------------------------------------------------

@dataclass
class Case:
    method: str
    path: Callable[[World, str], str]  # (world, role) -> path; may create a fresh object to act on
    expect: tuple[int, int, int, int]  # admin, owner of A, owner of B, plain user of A
    body: Callable[[World], dict] | None = None


CASES: dict[str, Case] = {
    "list domains": Case("GET", lambda w, r: "/domains", (200, 200, 200, 403)),
    "create domain": Case("POST", lambda w, r: "/domains", (201, 403, 403, 403),
                          lambda w: {"name": f"n{_token()}.test"}),
    "get domain": Case("GET", lambda w, r: f"/domains/{w.a_id}", (200, 200, 404, 403)),
    # Deleting is admin-only: the others try domain A itself, the admin a fresh empty domain.
    "delete domain": Case("DELETE", lambda w, r: f"/domains/{w.new_domain() if r == 'admin' else w.a_id}",
                          (204, 403, 403, 403)),
    "list users": Case("GET", lambda w, r: f"/domains/{w.a_id}/users", (200, 200, 404, 403)),
    "create user": Case("POST", lambda w, r: f"/domains/{w.a_id}/users", (201, 201, 404, 403),
                        lambda w: {"email": f"n{_token()}", "password": NEW_PASSWORD}),
    "patch user": Case("PATCH", lambda w, r: f"/users/{w.ids['victim_a']}", (200, 200, 404, 403),
                       lambda w: {"display_name": f"Victim {_token()}"}),
    "delete user": Case("DELETE", lambda w, r: f"/users/{w.new_user_in_a()}", (204, 204, 404, 403)),
    "list aliases": Case("GET", lambda w, r: f"/domains/{w.a_id}/aliases", (200, 200, 404, 403)),
    "create alias": Case("POST", lambda w, r: f"/domains/{w.a_id}/aliases", (201, 201, 404, 403),
                         lambda w: {"source": f"al{_token()}", "destinations": [f"pat@{w.a}"]}),
    "delete alias": Case("DELETE", lambda w, r: f"/aliases/{w.new_alias_in_a()}", (204, 204, 404, 403)),
    "get config": Case("GET", lambda w, r: "/system/config", (200, 403, 403, 403)),
    "put config": Case("PUT", lambda w, r: "/system/config", (200, 403, 403, 403),
                       lambda w: {"settings": {"matrix.probe": _token()}}),
    "storage stats": Case("GET", lambda w, r: "/stats/storage", (200, 200, 200, 403)),
    "storage of domain A": Case("GET", lambda w, r: f"/stats/storage?domain_id={w.a_id}", (200, 200, 404, 403)),
    "audit log": Case("GET", lambda w, r: "/audit", (200, 200, 200, 403)),
    "unknown domain": Case("GET", lambda w, r: "/domains/999999999", (404, 404, 404, 403)),
    "unknown user": Case("DELETE", lambda w, r: "/users/999999999", (404, 404, 404, 403)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_authorization_matrix(world: World, name: str):
    case = CASES[name]
    got = {}
    for role in ROLES:
        body = case.body(world) if case.body else None
        response = world.as_(role).call(case.method, API + case.path(world, role), body)
        got[role] = response.status
        if response.status >= 400:
            assert response.json()["error"] and "Traceback" not in response.body.decode()
    assert got == dict(zip(ROLES, case.expect, strict=True))


def test_every_admin_route_is_in_the_matrix(world: World):
    from whymail.api.routes import admin, api

    routes = {f"{op.method} {op.path}" for op in api.operations if op.handler.__module__ == admin.__name__}
    covered = set()
    for case in CASES.values():
        sample = case.path(world, "owner_b").split("?")[0]
        covered.add(f"{case.method} " + "/".join("{}" if part.isdigit() else part for part in sample.split("/")))
    shapes = {re.sub(r"\{[^}]*\}", "{}", route) for route in routes}
    assert len(routes) == 15 and shapes <= covered, shapes - covered


# --- domains -------------------------------------------------------------------------------------

def test_domain_round_trip_duplicates_and_forced_delete(world: World):
    admin = world.as_("admin")
    name = f"Bücher-{_token()}.Test"
    created = admin.post(API + "/domains", {"name": name})
    assert created.status == 201, created.body
    domain = created.json()
    assert domain["name"].startswith("xn--") and domain["user_count"] == 0
    assert admin.get(f"{API}/domains/{domain['id']}").json()["name"] == domain["name"]
    assert domain["id"] in [d["id"] for d in admin.get(API + "/domains").json()]

    again = admin.post(API + "/domains", {"name": domain["name"].upper()})
    assert again.status == 409 and again.json()["error"] == "conflict"
    bad = admin.post(API + "/domains", {"name": "no spaces.test"})
    assert bad.status == 400 and "name" in bad.json()["message"]

    assert admin.post(f"{API}/domains/{domain['id']}/users", {"email": "u1", "password": NEW_PASSWORD}).status == 201
    refused = admin.call("DELETE", f"{API}/domains/{domain['id']}")
    assert refused.status == 409 and "1 user" in refused.json()["message"]
    assert admin.call("DELETE", f"{API}/domains/{domain['id']}?force=true").status == 204
    assert admin.get(f"{API}/domains/{domain['id']}").status == 404
    assert not world.system.fetch("SELECT 1 FROM users WHERE domain_id = $1", domain["id"])

    actor = world.emails["admin"]
    created_rows = [r for r in audit_rows(world.system, "domain_created", actor) if r["target_id"] == str(domain["id"])]
    deleted_rows = [r for r in audit_rows(world.system, "domain_deleted", actor) if r["target_id"] == str(domain["id"])]
    assert len(created_rows) == 1 and len(deleted_rows) == 1
    assert '"users_deleted": 1' in deleted_rows[0]["details"]


def test_owner_lists_only_their_own_domain(world: World):
    listed = world.as_("owner_b").get(API + "/domains").json()
    assert [d["id"] for d in listed] == [world.b_id]


# --- users ---------------------------------------------------------------------------------------

def test_user_round_trip_by_the_domain_owner(world: World):
    owner = world.as_("owner_a")
    local = f"carol{_token()}"
    created = owner.post(f"{API}/domains/{world.a_id}/users", {
        "email": f"{local}@{world.a.upper()}", "password": NEW_PASSWORD, "display_name": "Carol",
        "quota_bytes": 1_000_000,
    })
    assert created.status == 201, created.body
    user = created.json()
    assert user["email"] == f"{local}@{world.a}" and user["role"] == "user" and user["quota_bytes"] == 1_000_000
    assert world.system.fetch("SELECT count(*) AS n FROM mailboxes WHERE user_id = $1", user["id"])[0]["n"] >= 5
    ApiClient(world.system).login(user["email"], NEW_PASSWORD)  # the password was hashed properly

    listed = owner.get(f"{API}/domains/{world.a_id}/users").json()
    assert user["email"] in [u["email"] for u in listed]
    duplicate = owner.post(f"{API}/domains/{world.a_id}/users", {"email": local, "password": NEW_PASSWORD})
    assert duplicate.status == 409

    patched = owner.call("PATCH", f"{API}/users/{user['id']}", {"display_name": "Carol C", "quota_bytes": 5,
                                                                  "is_active": False})
    assert patched.status == 200, patched.body
    assert (patched.json()["display_name"], patched.json()["quota_bytes"], patched.json()["is_active"]) == \
        ("Carol C", 5, False)
    login = ApiClient(world.system).post(API + "/auth/login", {"email": user["email"], "password": NEW_PASSWORD})
    assert login.status == 401  # disabled

    assert owner.call("DELETE", f"{API}/users/{user['id']}").status == 204
    assert owner.call("DELETE", f"{API}/users/{user['id']}").status == 404
    for action in ("user_created", "user_updated", "user_deleted"):
        rows = [r for r in audit_rows(world.system, action, f"own@{world.a}") if r["target_id"] == str(user["id"])]
        assert len(rows) == 1, action
        assert f'"domain": "{world.a}"' in rows[0]["details"]
    assert "password" not in audit_rows(world.system, "user_created", f"own@{world.a}")[-1]["details"]


@pytest.mark.parametrize("body, field", [
    ({"email": "x@elsewhere.test", "password": NEW_PASSWORD}, "email"),
    ({"email": "bad address", "password": NEW_PASSWORD}, "email"),
    ({"email": "shorty", "password": "short"}, "password"),
    ({"email": "x", "password": NEW_PASSWORD, "role": "god"}, "role"),
    ({"email": "x", "password": NEW_PASSWORD, "quota_bytes": -1}, "quota_bytes"),
    ({"email": "x", "password": NEW_PASSWORD, "display_name": "two\nlines"}, "display_name"),
    ({"email": "x", "password": NEW_PASSWORD, "is_admin": True}, "is_admin"),
    ({"password": NEW_PASSWORD}, "email"),
])
def test_bad_user_input_is_400_naming_the_field(world: World, body: dict, field: str):
    response = world.as_("owner_a").post(f"{API}/domains/{world.a_id}/users", body)
    assert response.status == 400, response.body
    assert field in response.json()["message"]


def test_plain_user_changes_only_own_name_and_password(world: World):
    email = f"self{_token()}@{world.a}"
    user_id = world.system.add_user(email)
    me = ApiClient(world.system)
    me.login(email)
    renamed = me.call("PATCH", f"{API}/users/{user_id}", {"display_name": "Me Myself"})
    assert renamed.status == 200 and renamed.json()["display_name"] == "Me Myself"
    assert me.call("PATCH", f"{API}/users/{user_id}", {"password": NEW_PASSWORD}).status == 200
    ApiClient(world.system).login(email, NEW_PASSWORD)
    assert me.call("PATCH", f"{API}/users/{user_id}", {"quota_bytes": 0}).status == 403
    assert me.call("PATCH", f"{API}/users/{user_id}", {"role": "admin"}).status == 403
    assert me.call("PATCH", f"{API}/users/{world.ids['victim_a']}", {"display_name": "x"}).status == 403
    assert me.call("PATCH", f"{API}/users/{user_id}", {}).status == 400
    assert world.system.fetch("SELECT role FROM users WHERE id = $1", user_id)[0]["role"] == "user"


def test_owner_cannot_raise_roles_or_touch_admins(world: World):
    owner = world.as_("owner_a")
    made_owner = owner.post(f"{API}/domains/{world.a_id}/users",
                            {"email": f"o{_token()}", "password": NEW_PASSWORD, "role": "owner"})
    assert made_owner.status == 403
    victim = world.ids["victim_a"]
    assert owner.call("PATCH", f"{API}/users/{victim}", {"role": "owner"}).status == 403
    admin_in_a = f"adm{_token()}@{world.a}"
    admin_id = world.system.add_user(admin_in_a)
    set_role(world.system, admin_in_a, "admin")
    assert owner.call("PATCH", f"{API}/users/{admin_id}", {"password": NEW_PASSWORD}).status == 403
    assert owner.call("DELETE", f"{API}/users/{admin_id}").status == 403
    # The admin may do both, but not lock themself out.
    admin = world.as_("admin")
    promoted = admin.call("PATCH", f"{API}/users/{victim}", {"role": "owner"})
    assert promoted.status == 200 and promoted.json()["role"] == "owner"
    assert admin.call("PATCH", f"{API}/users/{victim}", {"role": "user"}).json()["role"] == "user"
    assert admin.call("DELETE", f"{API}/users/{world.ids['admin']}").status == 409
    assert admin.call("PATCH", f"{API}/users/{world.ids['admin']}", {"is_active": False}).status == 409
    assert admin.call("DELETE", f"{API}/users/{admin_id}").status == 204
    own_domain = domain_id(world.system, world.emails["admin"].split("@")[1])
    assert admin.call("DELETE", f"{API}/domains/{own_domain}?force=true").status == 409


# --- aliases -------------------------------------------------------------------------------------

def test_alias_round_trip_catch_all_and_conflicts(world: World):
    owner = world.as_("owner_a")
    path = f"{API}/domains/{world.a_id}/aliases"
    local = f"sales{_token()}"
    created = owner.post(path, {"source": local, "destinations": [f"pat@{world.a}", "Out@Remote.test"]})
    assert created.status == 201, created.body
    alias = created.json()
    assert alias["source"] == f"{local}@{world.a}" and alias["destinations"] == [f"pat@{world.a}", "out@remote.test"]
    catch_all = owner.post(path, {"source": "@", "destinations": [f"pat@{world.a}"]})
    assert catch_all.status == 201 and catch_all.json()["is_catch_all"] and catch_all.json()["source"] == f"@{world.a}"
    sources = [a["source"] for a in owner.get(path).json()]
    assert alias["source"] in sources and f"@{world.a}" in sources

    assert owner.post(path, {"source": f"{local}@{world.a}", "destinations": ["x@y.test"]}).status == 409
    assert owner.post(path, {"source": "pat", "destinations": ["x@y.test"]}).status == 409  # a user's address
    elsewhere = owner.post(path, {"source": f"x@{world.b}", "destinations": ["x@y.test"]})
    assert elsewhere.status == 400 and "source" in elsewhere.json()["message"]
    bad_target = owner.post(path, {"source": "fine", "destinations": ["not an address"]})
    assert bad_target.status == 400 and "destinations" in bad_target.json()["message"]
    empty = owner.post(path, {"source": "fine", "destinations": []})
    assert empty.status == 400 and "destinations" in empty.json()["message"]

    for item in (alias, catch_all.json()):
        assert owner.call("DELETE", f"{API}/aliases/{item['id']}").status == 204
    assert owner.call("DELETE", f"{API}/aliases/{alias['id']}").status == 404
    rows = [r for r in audit_rows(world.system, "alias_deleted", f"own@{world.a}") if r["target_id"] == str(alias["id"])]
    assert len(rows) == 1


# --- system config, storage, audit -----------------------------------------------------------------

def test_system_config_set_get_and_remove(world: World):
    admin = world.as_("admin")
    key = f"test.{_token()}"
    put = admin.call("PUT", API + "/system/config", {"settings": {key: {"limit": [1, 2]}, f"{key}.flag": True}})
    assert put.status == 200 and put.json()["settings"][key] == {"limit": [1, 2]}
    got = admin.get(API + "/system/config").json()
    assert got["settings"][key] == {"limit": [1, 2]} and got["settings"][f"{key}.flag"] is True
    removed = admin.call("PUT", API + "/system/config", {"settings": {key: None}})
    assert key not in removed.json()["settings"] and f"{key}.flag" in removed.json()["settings"]
    bad = admin.call("PUT", API + "/system/config", {"settings": {"has space": 1}})
    assert bad.status == 400 and "settings" in bad.json()["message"]
    assert admin.call("PUT", API + "/system/config", {"settings": {}}).status == 400
    stored = world.system.fetch("SELECT updated_by FROM system_config WHERE key = $1", f"{key}.flag")
    assert stored[0]["updated_by"] == world.ids["admin"]
    assert any(key in r["target_id"] for r in audit_rows(world.system, "config_updated", world.emails["admin"]))


def test_storage_stats_per_domain_and_top_users(mail_system: MailSystem, world: World, domain: str):
    owner_email, big, small = f"own@{domain}", f"big@{domain}", f"small@{domain}"
    for email in (owner_email, big, small):
        mail_system.add_user(email)
    set_role(mail_system, owner_email, "owner")
    mail_system.fetch("UPDATE users SET storage_used = 5000, message_count = 7, quota_bytes = 10000 WHERE email = $1",
                      big)
    mail_system.fetch("UPDATE users SET storage_used = 300, message_count = 2 WHERE email = $1", small)
    owner = ApiClient(mail_system)
    owner.login(owner_email)

    stats = owner.get(API + "/stats/storage?top=2")
    assert stats.status == 200, stats.body
    report = stats.json()
    assert [d["domain"] for d in report["domains"]] == [domain]
    assert (report["total_storage_used"], report["total_messages"]) == (5300, 9)
    assert report["domains"][0]["user_count"] == 3
    assert [u["email"] for u in report["top_users"]] == [big, small]
    assert report["top_users"][0]["percent_used"] == 50.0 and report["top_users"][1]["percent_used"] is None

    everything = world.as_("admin").get(API + "/stats/storage").json()
    assert {domain, world.a, world.b} <= {d["domain"] for d in everything["domains"]}
    assert everything["total_storage_used"] >= 5300
    assert world.as_("admin").get(API + "/stats/storage?top=0").status == 400


def test_audit_log_filters_scope_and_cursor(world: World):
    admin, owner_a, owner_b = world.as_("admin"), world.as_("owner_a"), world.as_("owner_b")
    # Three changes in domain A by its owner, one by the admin.
    for _ in range(3):
        response = owner_a.post(f"{API}/domains/{world.a_id}/aliases",
                                {"source": f"au{_token()}", "destinations": [f"pat@{world.a}"]})
        assert response.status == 201
    by_admin = admin.post(f"{API}/domains/{world.a_id}/aliases",
                          {"source": f"ad{_token()}", "destinations": [f"pat@{world.a}"]}).json()

    mine = owner_a.get(f"{API}/audit?action=alias_created&actor=OWN@{world.a.upper()}&limit=2")
    assert mine.status == 200, mine.body
    first = mine.json()
    assert len(first["items"]) == 2 and first["next_cursor"] == first["items"][-1]["id"]
    assert all(r["actor_email"] == f"own@{world.a}" and r["action"] == "alias_created" for r in first["items"])
    second = owner_a.get(f"{API}/audit?action=alias_created&actor=own@{world.a}&limit=2"
                         f"&cursor={first['next_cursor']}").json()
    assert second["items"] and max(r["id"] for r in second["items"]) < min(r["id"] for r in first["items"])

    # The owner of A sees the admin's change in A; the owner of B sees neither.
    seen_by_a = {r["target_id"] for r in owner_a.get(f"{API}/audit?action=alias_created&limit=1000").json()["items"]}
    assert str(by_admin["id"]) in seen_by_a
    seen_by_b = owner_b.get(f"{API}/audit?limit=1000").json()["items"]
    assert all(world.a not in (r["actor_email"] or "") and r["details"].get("domain") != world.a for r in seen_by_b)
    admin_view = admin.get(f"{API}/audit?action=alias_created&limit=1000").json()["items"]
    assert str(by_admin["id"]) in {r["target_id"] for r in admin_view}

    future = admin.get(f"{API}/audit?since=2999-01-01T00:00:00Z").json()
    assert future == {"items": [], "next_cursor": None}
    backwards = admin.get(f"{API}/audit?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z")
    assert backwards.status == 400 and "until" in backwards.json()["message"]
    assert admin.get(f"{API}/audit?limit=0").status == 400
