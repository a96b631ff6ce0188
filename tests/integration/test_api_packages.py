"""Packages and package templates through the API, and the limits a package puts on a domain's users."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from tests.integration.api_client import ApiClient
from tests.integration.conftest import TEST_PASSWORD, MailSystem

API = "/api/v1"


def _name(prefix: str = "pkg") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _domain_id(system: MailSystem, name: str) -> int:
    return system.fetch("SELECT id FROM domains WHERE name = $1", name)[0]["id"]


@dataclass
class People:
    admin: ApiClient
    owner: ApiClient
    user: ApiClient
    domain: str  # the owner's and the user's domain
    domain_id: int


@pytest.fixture
def people(mail_system: MailSystem, domain: str) -> People:
    admin_domain = f"adm{uuid.uuid4().hex[:8]}.test"
    mail_system.add_domain(admin_domain)
    emails = {"admin": f"boss@{admin_domain}", "owner": f"own@{domain}", "user": f"pat@{domain}"}
    for role, email in emails.items():
        mail_system.add_user(email)
        if role != "user":
            mail_system.fetch("UPDATE users SET role = $2 WHERE email = $1", email, role)
    clients = {}
    for role, email in emails.items():
        clients[role] = ApiClient(mail_system)
        clients[role].login(email)
    return People(clients["admin"], clients["owner"], clients["user"], domain, _domain_id(mail_system, domain))


def _create_package(admin: ApiClient, **fields) -> dict:
    response = admin.post(f"{API}/packages", {"name": _name(), **fields})
    assert response.status == 201, response.body
    return response.json()


def _assign(admin: ApiClient, domain_id: int, package_id: int | None):
    return admin.call("PUT", f"{API}/domains/{domain_id}/package", {"package_id": package_id})


def _new_user(client: ApiClient, domain_id: int, quota_bytes: int = 0, local: str | None = None):
    return client.post(f"{API}/domains/{domain_id}/users", {
        "email": local or f"u{uuid.uuid4().hex[:8]}", "password": TEST_PASSWORD, "quota_bytes": quota_bytes,
    })


# --- CRUD and authorization --------------------------------------------------------------------------

def test_package_crud_round_trip(mail_system: MailSystem, people: People):
    admin = people.admin
    created = _create_package(admin, description="small office", max_users=5, max_storage_bytes=10**9,
                              max_user_quota_bytes=10**8, features={"webmail": True})
    assert created["max_users"] == 5 and created["max_storage_bytes"] == 10**9
    assert created["max_user_quota_bytes"] == 10**8 and created["features"] == {"webmail": True}
    assert created["is_active"] is True and created["domain_count"] == 0 and created["template_id"] is None
    package_id = created["id"]

    listed = admin.get(f"{API}/packages").json()
    assert [p for p in listed if p["id"] == package_id] == [created]
    assert admin.get(f"{API}/packages/{package_id}").json() == created

    replaced = admin.call("PUT", f"{API}/packages/{package_id}", {
        "name": created["name"], "max_users": 7, "is_active": False,
    })
    assert replaced.status == 200, replaced.body
    body = replaced.json()
    assert body["max_users"] == 7 and body["is_active"] is False
    assert body["max_storage_bytes"] == 0 and body["features"] == {}  # PUT replaces every field

    other = _create_package(admin)
    taken = admin.call("PUT", f"{API}/packages/{other['id']}", {"name": created["name"]})
    assert taken.status == 409 and "exists already" in taken.json()["message"]
    assert admin.post(f"{API}/packages", {"name": created["name"]}).status == 409

    assert admin.call("DELETE", f"{API}/packages/{package_id}").status == 204
    assert admin.get(f"{API}/packages/{package_id}").status == 404
    assert admin.call("DELETE", f"{API}/packages/{package_id}").status == 404
    assert admin.call("PUT", f"{API}/packages/{package_id}", {"name": _name()}).status == 404
    actions = [r["action"] for r in mail_system.fetch(
        "SELECT action FROM audit_logs WHERE target_type = 'package' AND target_id = $1 ORDER BY id",
        str(package_id))]
    assert actions == ["package_created", "package_updated", "package_deleted"]


def test_package_bodies_are_validated(people: People):
    admin = people.admin
    negative = admin.post(f"{API}/packages", {"name": _name(), "max_users": -1})
    assert negative.status == 400 and "max_users" in negative.json()["message"]
    reserved = admin.post(f"{API}/packages", {"name": _name(), "features": {"max_user_quota_bytes": 5}})
    assert reserved.status == 400 and "features" in reserved.json()["message"]
    unknown = admin.post(f"{API}/packages", {"name": _name(), "max_mailboxes": 3})
    assert unknown.status == 400
    assert admin.post(f"{API}/packages", {"name": ""}).status == 400


def test_only_admins_manage_packages_and_owners_read_their_domains(people: People):
    admin = people.admin
    package = _create_package(admin, max_users=3)
    template = admin.post(f"{API}/package-templates", {"name": _name("tpl")}).json()
    calls = [
        ("GET", "/packages", None), ("POST", "/packages", {"name": _name()}),
        ("GET", f"/packages/{package['id']}", None), ("PUT", f"/packages/{package['id']}", {"name": _name()}),
        ("DELETE", f"/packages/{package['id']}", None),
        ("PUT", f"/domains/{people.domain_id}/package", {"package_id": package["id"]}),
        ("GET", "/package-templates", None), ("POST", "/package-templates", {"name": _name("tpl")}),
        ("DELETE", f"/package-templates/{template['id']}", None),
        ("POST", f"/package-templates/{template['id']}/instantiate", {}),
    ]
    for client in (people.owner, people.user):
        for method, path, body in calls:
            response = client.call(method, API + path, body)
            assert response.status == 403, (method, path, response.status)
    # Nothing was changed by the refused calls.
    assert admin.get(f"{API}/packages/{package['id']}").json()["name"] == package["name"]
    assert admin.get(f"{API}/domains/{people.domain_id}/package").json()["package"] is None

    assert _assign(admin, people.domain_id, package["id"]).status == 200
    seen = people.owner.get(f"{API}/domains/{people.domain_id}/package")
    assert seen.status == 200 and seen.json()["package"]["id"] == package["id"]
    other_domain = f"o{uuid.uuid4().hex[:8]}.test"
    created = admin.post(f"{API}/domains", {"name": other_domain})
    assert created.status == 201
    assert people.owner.get(f"{API}/domains/{created.json()['id']}/package").status == 404
    assert people.user.get(f"{API}/domains/{people.domain_id}/package").status == 403


def test_assigning_a_package_to_a_domain(people: People):
    admin = people.admin
    package = _create_package(admin)
    assigned = _assign(admin, people.domain_id, package["id"])
    assert assigned.status == 200, assigned.body
    assert assigned.json()["domain"] == people.domain and assigned.json()["package"]["id"] == package["id"]
    assert admin.get(f"{API}/packages/{package['id']}").json()["domain_count"] == 1

    assert _assign(admin, people.domain_id, 999_999_999).status == 404
    assert _assign(admin, 999_999_999, package["id"]).status == 404
    inactive = _create_package(admin, is_active=False)
    refused = _assign(admin, people.domain_id, inactive["id"])
    assert refused.status == 409 and "inactive" in refused.json()["message"]

    removed = _assign(admin, people.domain_id, None)
    assert removed.status == 200 and removed.json()["package"] is None
    assert admin.get(f"{API}/packages/{package['id']}").json()["domain_count"] == 0

    # Deleting a package leaves its domains without one.
    assert _assign(admin, people.domain_id, package["id"]).status == 200
    assert admin.call("DELETE", f"{API}/packages/{package['id']}").status == 204
    assert admin.get(f"{API}/domains/{people.domain_id}/package").json()["package"] is None


def test_templates_are_instantiated_into_packages(people: People):
    admin = people.admin
    name = _name("tpl")
    created = admin.post(f"{API}/package-templates", {
        "name": name, "description": "starter", "max_users": 4, "max_storage_bytes": 4_000_000,
        "max_send_per_day": 100, "max_user_quota_bytes": 1_000_000, "features": {"api": False},
    })
    assert created.status == 201, created.body
    template = created.json()
    assert [t for t in admin.get(f"{API}/package-templates").json() if t["id"] == template["id"]] == [template]
    assert admin.post(f"{API}/package-templates", {"name": name}).status == 409

    package = admin.post(f"{API}/package-templates/{template['id']}/instantiate")
    assert package.status == 201, package.body
    first = package.json()
    assert first["template_id"] == template["id"] and first["name"] == name
    for key in ("description", "max_users", "max_storage_bytes", "max_send_per_day", "max_user_quota_bytes",
                "features"):
        assert first[key] == template[key], key
    again = admin.post(f"{API}/package-templates/{template['id']}/instantiate", {})
    assert again.status == 409  # the template's name is taken by the first package now
    renamed = admin.post(f"{API}/package-templates/{template['id']}/instantiate", {"name": _name()})
    assert renamed.status == 201 and renamed.json()["max_users"] == 4

    assert admin.call("DELETE", f"{API}/package-templates/{template['id']}").status == 204
    assert admin.call("DELETE", f"{API}/package-templates/{template['id']}").status == 404
    assert admin.post(f"{API}/package-templates/{template['id']}/instantiate", {}).status == 404
    kept = admin.get(f"{API}/packages/{first['id']}").json()
    assert kept["template_id"] is None and kept["max_user_quota_bytes"] == 1_000_000


# --- limits ------------------------------------------------------------------------------------------

def _users_of(system: MailSystem, domain: str) -> int:
    return system.fetch("SELECT count(*) AS n FROM users u JOIN domains d ON d.id = u.domain_id "
                        "WHERE d.name = $1", domain)[0]["n"]


def test_creating_a_user_beyond_max_users_is_409(mail_system: MailSystem, people: People):
    admin = people.admin
    package = _create_package(admin, max_users=3)  # the owner and the user are two already
    assert _assign(admin, people.domain_id, package["id"]).status == 200
    third = _new_user(people.owner, people.domain_id)
    assert third.status == 201, third.body
    fourth = _new_user(people.owner, people.domain_id)
    assert fourth.status == 409
    error = fourth.json()
    assert error["error"] == "package_limit" and "limit of 3 users" in error["message"]
    assert package["name"] in error["message"]
    assert _new_user(admin, people.domain_id).status == 409  # admins are held to it too
    assert _users_of(mail_system, people.domain) == 3

    # Without a package the domain has no limit again.
    assert _assign(admin, people.domain_id, None).status == 200
    assert _new_user(people.owner, people.domain_id).status == 201


def test_a_quota_above_the_packages_per_user_limit_is_refused(people: People):
    admin = people.admin
    package = _create_package(admin, max_user_quota_bytes=1_000_000)
    assert _assign(admin, people.domain_id, package["id"]).status == 200
    too_big = _new_user(people.owner, people.domain_id, quota_bytes=1_000_001)
    assert too_big.status == 409 and "largest quota per user" in too_big.json()["message"]
    unlimited = _new_user(people.owner, people.domain_id, quota_bytes=0)
    assert unlimited.status == 409 and "unlimited quota" in unlimited.json()["message"]
    fits = _new_user(people.owner, people.domain_id, quota_bytes=1_000_000)
    assert fits.status == 201, fits.body
    user_id = fits.json()["id"]

    raised = people.owner.call("PATCH", f"{API}/users/{user_id}", {"quota_bytes": 2_000_000})
    assert raised.status == 409 and raised.json()["error"] == "package_limit"
    assert admin.call("PATCH", f"{API}/users/{user_id}", {"quota_bytes": 0}).status == 409
    lowered = people.owner.call("PATCH", f"{API}/users/{user_id}", {"quota_bytes": 500_000})
    assert lowered.status == 200 and lowered.json()["quota_bytes"] == 500_000


def test_the_domains_storage_limit_refuses_new_users_and_quota_increases(people: People):
    admin = people.admin
    package = _create_package(admin, max_storage_bytes=3_000_000)
    assert _assign(admin, people.domain_id, package["id"]).status == 200
    # The two existing users have unlimited quotas from before the package: they count 0.
    first = _new_user(people.owner, people.domain_id, quota_bytes=1_000_000)
    second = _new_user(people.owner, people.domain_id, quota_bytes=1_500_000)
    assert first.status == 201 and second.status == 201
    third = _new_user(people.owner, people.domain_id, quota_bytes=600_000)
    assert third.status == 409
    assert "3100000 bytes" in third.json()["message"] and "3000000" in third.json()["message"]
    unlimited = _new_user(people.owner, people.domain_id, quota_bytes=0)
    assert unlimited.status == 409 and "storage" in unlimited.json()["message"]
    assert _new_user(people.owner, people.domain_id, quota_bytes=500_000).status == 201  # exactly 3 MB

    first_id = first.json()["id"]
    grow = people.owner.call("PATCH", f"{API}/users/{first_id}", {"quota_bytes": 1_000_001})
    assert grow.status == 409 and grow.json()["error"] == "package_limit"
    shrink = people.owner.call("PATCH", f"{API}/users/{first_id}", {"quota_bytes": 400_000})
    assert shrink.status == 200
    # What the shrink freed may be given to someone else.
    assert _new_user(people.owner, people.domain_id, quota_bytes=600_000).status == 201


def test_a_smaller_package_keeps_what_exists_and_refuses_growth(mail_system: MailSystem, people: People):
    admin = people.admin
    package = _create_package(admin, max_users=10)
    assert _assign(admin, people.domain_id, package["id"]).status == 200
    assert _new_user(people.owner, people.domain_id).status == 201
    shrunk = admin.call("PUT", f"{API}/packages/{package['id']}", {"name": package["name"], "max_users": 1})
    assert shrunk.status == 200
    assert _users_of(mail_system, people.domain) == 3  # nobody is removed
    assert _new_user(people.owner, people.domain_id).status == 409
