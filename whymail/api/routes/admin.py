"""Administration: domains, their users and aliases, system config, storage statistics, the audit log.

Who may do what: an admin everything; an owner the users and aliases of their own domain (not its
admins, and never a role above `user`); a plain user only their own display name and password. A
domain, user or alias the caller may not manage is 404 (its existence is not revealed); an action the
caller's role never allows is 403. Every change is written to the audit log with the caller as actor.
"""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg

from whymail import packages
from whymail.api.errors import ApiError, bad_request, conflict, forbidden, not_found
from whymail.api.models import UserOut
from whymail.api.models_admin import (
    AliasIn,
    AliasOut,
    AuditEntry,
    AuditPage,
    AuditQuery,
    DomainDeleteQuery,
    DomainIn,
    DomainOut,
    DomainStorage,
    StorageQuery,
    StorageStats,
    SystemConfigIn,
    SystemConfigOut,
    UserCreateIn,
    UserPatchIn,
    UserStorage,
)
from whymail.api.routes import api
from whymail.api.routes.common import ADMIN, MANAGERS, audit
from whymail.api.spec import Req
from whymail.auth.passwords import check_password_policy, hash_password
from whymail.directory import records, reports, service
from whymail.directory.addresses import normalize_alias_source, normalize_domain
from whymail.directory.service import AlreadyExists, Conflict, DirectoryError, InvalidInput, NotFound
from whymail.notify import alerts


def _refused(exc: DirectoryError, field: str | None = None) -> ApiError:
    """The API error for a refused directory operation; `field` names the body field bad input came from."""
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, AlreadyExists | Conflict):
        return conflict(str(exc))
    if isinstance(exc, InvalidInput) and field:
        return ApiError(400, "invalid_body", f"body: {field}: {exc}")
    return bad_request(str(exc))


async def _managed_domain(req: Req, conn: asyncpg.Connection, domain_id: int) -> records.DomainRecord:
    """The domain if the caller manages it; 404 otherwise (also for another owner's domain)."""
    domain = await records.domain_by_id(conn, domain_id)
    if domain is None or not req.me().may_manage_domain(domain.id):
        raise not_found("domain")
    return domain


async def _managed_user(req: Req, conn: asyncpg.Connection, user_id: int) -> records.UserRef:
    """A user the caller (admin or owner) manages: 404 outside the owner's domain, 403 for an admin."""
    caller = req.me()
    user = await records.user_by_id(conn, user_id)
    if user is None or not caller.may_manage_domain(user.domain_id):
        raise not_found("user")
    if user.role == "admin" and not caller.is_admin:
        raise forbidden("only an admin may change an admin")
    return user


async def _password_hash(req: Req, password: str, field: str = "password") -> str:
    try:
        check_password_policy(password)
    except ValueError as exc:
        raise ApiError(400, "invalid_body", f"body: {field}: {exc}") from None
    return await asyncio.to_thread(hash_password, password, req.ctx.config.auth.bcrypt_rounds)


def _user_out(user: records.UserRecord) -> UserOut:
    return UserOut(**{name: getattr(user, name) for name in UserOut.model_fields})


def _alias_out(alias: records.AliasRecord) -> AliasOut:
    return AliasOut(
        id=alias.id, source=alias.source, domain=alias.domain, destinations=list(alias.destinations),
        is_active=alias.is_active, is_catch_all=alias.is_catch_all, created_at=alias.created_at,
    )


# --- domains -------------------------------------------------------------------------------------

@api.route("GET", "/domains", tag="domains", response=[DomainOut], roles=MANAGERS)
async def list_domains(req: Req) -> list[DomainOut]:
    """Every domain (admin), or the caller's own (owner)."""
    caller = req.me()
    async with req.ctx.pool.acquire() as conn:
        domains = await records.list_domain_records(conn, None if caller.is_admin else caller.domain_id)
    return [DomainOut(**dataclasses.asdict(d)) for d in domains]


@api.route("POST", "/domains", tag="domains", body=DomainIn, response=DomainOut, status=201, roles=ADMIN,
           errors=(409,))
async def create_domain(req: Req) -> DomainOut:
    """Add a local domain."""
    async with req.ctx.pool.acquire() as conn:
        try:
            info = await service.add_domain(conn, req.body.name)
        except DirectoryError as exc:
            raise _refused(exc, "name") from None
        domain = await records.domain_by_name(conn, info.name)
    if domain is None:  # deleted by someone else in between
        raise not_found("domain")
    await audit(req, "domain_created", "domain", domain.id, domain=domain.name)
    # Stored and pushed live in the background: a notification never slows or fails the request.
    live = req.ctx.live
    alerts.in_background(alerts.notify_domain_added(req.ctx.pool, domain.id, domain.name, req.me().email,
                                                    announce=live.announce if live is not None else None))
    return DomainOut(**dataclasses.asdict(domain))


@api.route("GET", "/domains/{domain_id:int}", tag="domains", response=DomainOut, roles=MANAGERS, errors=(404,))
async def get_domain(req: Req) -> DomainOut:
    """One domain with its user and alias counts."""
    async with req.ctx.pool.acquire() as conn:
        domain = await _managed_domain(req, conn, req.params["domain_id"])
    return DomainOut(**dataclasses.asdict(domain))


@api.route("DELETE", "/domains/{domain_id:int}", tag="domains", query=DomainDeleteQuery, status=204,
           roles=ADMIN, errors=(404, 409))
async def delete_domain(req: Req) -> None:
    """Delete a domain and its aliases; 409 while it has users unless `force=true` (then they go too)."""
    async with req.ctx.pool.acquire() as conn:
        domain = await _managed_domain(req, conn, req.params["domain_id"])
        if domain.id == req.me().domain_id:
            raise conflict("you cannot delete the domain of your own account")
        try:
            info = await service.delete_domain(conn, domain.name, force=req.query.force)
        except DirectoryError as exc:
            raise _refused(exc) from None
    await audit(req, "domain_deleted", "domain", domain.id, domain=domain.name, force=req.query.force,
                 users_deleted=info.user_count)


# --- users ---------------------------------------------------------------------------------------

def _address_in(domain: str, given: str) -> str:
    """`given` (a local part or a full address) as an address of `domain`; 400 if it names another domain."""
    local, at, other = given.rpartition("@")
    if not at:
        return f"{given}@{domain}"
    try:
        same = normalize_domain(other) == domain
    except ValueError:
        same = False
    if not same:
        raise ApiError(400, "invalid_body", f"body: email: the address must be in the domain {domain}")
    return f"{local}@{domain}"


@api.route("GET", "/domains/{domain_id:int}/users", tag="users", response=[UserOut], roles=MANAGERS,
           errors=(404,))
async def list_domain_users(req: Req) -> list[UserOut]:
    """The users of a domain, by address."""
    async with req.ctx.pool.acquire() as conn:
        domain = await _managed_domain(req, conn, req.params["domain_id"])
        users = await records.users_of_domain(conn, domain.id)
    return [_user_out(u) for u in users]


@api.route("POST", "/domains/{domain_id:int}/users", tag="users", body=UserCreateIn, response=UserOut,
           status=201, roles=MANAGERS, errors=(404, 409))
async def create_user(req: Req) -> UserOut:
    """Create a user with the default mailboxes; only an admin may create owners and admins."""
    body: UserCreateIn = req.body
    if body.role != "user" and not req.me().is_admin:
        raise forbidden("only an admin may create owners and admins")
    async with req.ctx.pool.acquire() as conn:
        domain = await _managed_domain(req, conn, req.params["domain_id"])
    address = _address_in(domain.name, body.email)
    quota = req.ctx.config.limits.default_quota if body.quota_bytes is None else body.quota_bytes
    password_hash = await _password_hash(req, body.password)
    async with req.ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():  # the package check holds the domain's lock until the commit
                await packages.check_user_limits(conn, domain.id, quota_bytes=quota)
                info = await service.add_user(conn, address, password_hash, display_name=body.display_name,
                                              quota_bytes=quota, role=body.role)
        except DirectoryError as exc:
            raise _refused(exc, "email") from None
        except packages.LimitExceeded as exc:
            raise ApiError(409, "package_limit", str(exc)) from None
        user = await records.user_record(conn, info.id)
    if user is None:
        raise not_found("user")
    await audit(req, "user_created", "user", user.id, email=user.email, domain=user.domain, role=user.role,
                 quota_bytes=user.quota_bytes)
    live = req.ctx.live  # stored and pushed live in the background, like domain_added
    alerts.in_background(alerts.notify_user_added(req.ctx.pool, user.id, user.email, domain.id, req.me().email,
                                                  announce=live.announce if live is not None else None))
    return _user_out(user)


def _check_patch_allowed(req: Req, user_id: int, body: UserPatchIn) -> None:
    """403 for what the caller's role may not change; 409 for locking oneself out."""
    caller = req.me()
    if caller.role == "user":
        if user_id != caller.user_id:
            raise forbidden("you may only change your own account")
        if body.quota_bytes is not None or body.is_active is not None or body.role is not None:
            raise forbidden("you may change only your display name and password")
    if body.role is not None and not caller.is_admin:
        raise forbidden("only an admin may change roles")
    if user_id == caller.user_id and (body.is_active is False or (body.role or caller.role) != caller.role):
        raise conflict("you cannot disable your own account or change your own role")


@api.route("PATCH", "/users/{user_id:int}", tag="users", body=UserPatchIn, response=UserOut, errors=(404, 409))
async def update_user(req: Req) -> UserOut:
    """Change a user's display name, password, quota, active flag or (admin) role."""
    body: UserPatchIn = req.body
    changed = sorted(body.model_dump(exclude_none=True))
    if not changed:
        raise ApiError(400, "invalid_body", "body: give at least one field to change")
    user_id = req.params["user_id"]
    _check_patch_allowed(req, user_id, body)
    async with req.ctx.pool.acquire() as conn:
        if user_id == req.me().user_id:
            user = await records.user_by_id(conn, user_id)
            if user is None:
                raise not_found("user")
        else:
            user = await _managed_user(req, conn, user_id)
    password_hash = await _password_hash(req, body.password) if body.password is not None else None
    async with req.ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():
                if body.display_name is not None:
                    await records.set_display_name(conn, user.id, body.display_name)
                if password_hash is not None:
                    await service.set_password(conn, user.email, password_hash)
                    # Other sessions end with the old password: their refresh tokens stop working.
                    await conn.execute("UPDATE refresh_tokens SET revoked_at = now() "
                                       "WHERE user_id = $1 AND revoked_at IS NULL", user.id)
                if body.quota_bytes is not None:
                    await packages.check_user_limits(conn, user.domain_id, quota_bytes=body.quota_bytes,
                                                     user_id=user.id)
                    await service.set_quota(conn, user.email, body.quota_bytes)
                if body.is_active is not None:
                    await service.set_enabled(conn, user.email, body.is_active)
                if body.role is not None:
                    await records.set_role(conn, user.id, body.role)
        except DirectoryError as exc:
            raise _refused(exc) from None
        except packages.LimitExceeded as exc:
            raise ApiError(409, "package_limit", str(exc)) from None
        updated = await records.user_record(conn, user.id)
    if updated is None:
        raise not_found("user")
    details = {key: value for key, value in body.model_dump(exclude_none=True).items() if key != "password"}
    await audit(req, "user_updated", "user", user.id, email=user.email, domain=updated.domain, fields=changed,
                 changes=details)
    return _user_out(updated)


@api.route("DELETE", "/users/{user_id:int}", tag="users", status=204, roles=MANAGERS, errors=(404, 409))
async def delete_user(req: Req) -> None:
    """Delete a user with their mailboxes and message rows (Maildir files stay for the operator)."""
    user_id = req.params["user_id"]
    async with req.ctx.pool.acquire() as conn:
        user = await _managed_user(req, conn, user_id)
        if user.id == req.me().user_id:
            raise conflict("you cannot delete your own account")
        try:
            info = await service.delete_user(conn, user.email)
        except DirectoryError as exc:
            raise _refused(exc) from None
    await audit(req, "user_deleted", "user", user.id, email=info.email, domain=info.domain)


# --- aliases -------------------------------------------------------------------------------------

def _alias_source_in(domain: str, given: str) -> str:
    """The canonical alias source for `given` (local part, address or `@`/`@domain`) in `domain`; 400 otherwise."""
    candidate = f"{given}@{domain}" if "@" not in given else (f"@{domain}" if given == "@" else given)
    try:
        source, source_domain = normalize_alias_source(candidate)
    except ValueError as exc:
        raise ApiError(400, "invalid_body", f"body: source: {exc}") from None
    if source_domain != domain:
        raise ApiError(400, "invalid_body", f"body: source: the alias must be in the domain {domain}")
    return source


@api.route("GET", "/domains/{domain_id:int}/aliases", tag="aliases", response=[AliasOut], roles=MANAGERS,
           errors=(404,))
async def list_domain_aliases(req: Req) -> list[AliasOut]:
    """The aliases (and catch-all) of a domain, by source."""
    async with req.ctx.pool.acquire() as conn:
        domain = await _managed_domain(req, conn, req.params["domain_id"])
        aliases = await records.aliases_of_domain(conn, domain.id)
    return [_alias_out(a) for a in aliases]


@api.route("POST", "/domains/{domain_id:int}/aliases", tag="aliases", body=AliasIn, response=AliasOut,
           status=201, roles=MANAGERS, errors=(404, 409))
async def create_alias(req: Req) -> AliasOut:
    """Forward an address of the domain (`@` for every unknown address) to one or more destinations."""
    async with req.ctx.pool.acquire() as conn:
        domain = await _managed_domain(req, conn, req.params["domain_id"])
        source = _alias_source_in(domain.name, req.body.source)
        try:
            info = await service.add_alias(conn, source, req.body.destinations)
        except DirectoryError as exc:
            raise _refused(exc, "destinations") from None
        alias = await records.alias_by_source(conn, info.source)
    if alias is None:
        raise not_found("alias")
    await audit(req, "alias_created", "alias", alias.id, source=alias.source, domain=alias.domain,
                 destinations=list(alias.destinations))
    return _alias_out(alias)


@api.route("DELETE", "/aliases/{alias_id:int}", tag="aliases", status=204, roles=MANAGERS, errors=(404,))
async def delete_alias(req: Req) -> None:
    """Delete an alias or catch-all."""
    async with req.ctx.pool.acquire() as conn:
        alias = await records.alias_by_id(conn, req.params["alias_id"])
        if alias is None or not req.me().may_manage_domain(alias.domain_id):
            raise not_found("alias")
        try:
            await service.delete_alias(conn, alias.source)
        except DirectoryError as exc:
            raise _refused(exc) from None
    await audit(req, "alias_deleted", "alias", alias.id, source=alias.source, domain=alias.domain)


# --- system config -------------------------------------------------------------------------------

@api.route("GET", "/system/config", tag="system", response=SystemConfigOut, roles=ADMIN)
async def get_system_config(req: Req) -> SystemConfigOut:
    """Every stored system setting (key → JSON value)."""
    async with req.ctx.pool.acquire() as conn:
        settings = await reports.read_settings(conn)
    return SystemConfigOut(settings=settings.values, updated_at=settings.updated_at)


@api.route("PUT", "/system/config", tag="system", body=SystemConfigIn, response=SystemConfigOut, roles=ADMIN)
async def put_system_config(req: Req) -> SystemConfigOut:
    """Set the given keys (a null value removes one); keys not named are kept."""
    changes = req.body.settings
    if not changes:
        raise ApiError(400, "invalid_body", "body: settings: give at least one key")
    async with req.ctx.pool.acquire() as conn:
        settings = await reports.write_settings(conn, changes, req.me().user_id)
    await audit(req, "config_updated", "system_config", ",".join(sorted(changes))[:200], changes=changes)
    return SystemConfigOut(settings=settings.values, updated_at=settings.updated_at)


# --- storage statistics --------------------------------------------------------------------------

@api.route("GET", "/stats/storage", tag="system", query=StorageQuery, response=StorageStats, roles=MANAGERS,
           errors=(404,))
async def storage_stats(req: Req) -> StorageStats:
    """Storage and message totals per domain and the largest users (an owner sees their domain only)."""
    caller = req.me()
    wanted = req.query.domain_id
    if not caller.is_admin:
        if wanted is not None and wanted != caller.domain_id:
            raise not_found("domain")
        wanted = caller.domain_id
    async with req.ctx.pool.acquire() as conn:
        if wanted is not None and await records.domain_by_id(conn, wanted) is None:
            raise not_found("domain")
        report = await reports.storage_report(conn, wanted, req.query.top)
    return StorageStats(
        total_storage_used=report.total_storage_used, total_messages=report.total_messages,
        domains=[DomainStorage(**dataclasses.asdict(d)) for d in report.domains],
        top_users=[UserStorage(**dataclasses.asdict(u), percent_used=u.percent_used) for u in report.top_users],
    )


# --- audit log -----------------------------------------------------------------------------------

@api.route("GET", "/audit", tag="system", query=AuditQuery, response=AuditPage, roles=MANAGERS)
async def audit_log(req: Req) -> AuditPage:
    """Audit rows, newest first, with filters; an owner sees the rows of their domain's users and changes."""
    caller = req.me()
    query: AuditQuery = req.query
    if query.since and query.until and query.since >= query.until:
        raise ApiError(400, "invalid_query", "query: until: must be later than since")
    wanted = reports.AuditFilter(
        action=query.action, actor_email=query.actor, since=query.since, until=query.until,
        before_id=query.cursor, limit=query.limit,
    )
    async with req.ctx.pool.acquire() as conn:
        rows, next_cursor = await reports.audit_rows(conn, wanted, None if caller.is_admin else caller.domain_id)
    return AuditPage(items=[AuditEntry(**row) for row in rows], next_cursor=next_cursor)
