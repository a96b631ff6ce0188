"""Packages and package templates: the limits a domain is given (see whymail/packages.py).

Only an admin creates, changes, deletes and assigns packages; the owner of a domain may read the
package of their own domain. Every change is written to the audit log.
"""

from __future__ import annotations

from whymail.api.errors import ApiError, conflict, not_found
from whymail.api.models_packages import (
    DomainPackageIn,
    DomainPackageOut,
    InstantiateIn,
    PackageIn,
    PackageOut,
    TemplateIn,
    TemplateOut,
)
from whymail.api.routes import api
from whymail.api.routes.common import ADMIN, MANAGERS, audit
from whymail.api.spec import Req
from whymail.directory import records
from whymail.packages import (
    LimitExceeded,
    PackageNameTaken,
    PackageNotFound,
    assign_package,
    create_package,
    create_template,
    delete_package,
    delete_template,
    domain_package_id,
    instantiate_template,
    list_packages,
    list_templates,
    package_by_id,
    replace_package,
)


def _limits_audit(body: PackageIn | TemplateIn) -> dict:
    return body.model_dump(exclude={"description", "features"})


# --- packages ------------------------------------------------------------------------------------

@api.route("GET", "/packages", tag="packages", response=[PackageOut], roles=ADMIN)
async def get_packages(req: Req) -> list[PackageOut]:
    """Every package, by name, with the number of domains using it."""
    async with req.ctx.pool.acquire() as conn:
        return [PackageOut.of(p) for p in await list_packages(conn)]


@api.route("POST", "/packages", tag="packages", body=PackageIn, response=PackageOut, status=201, roles=ADMIN,
           errors=(409,))
async def post_package(req: Req) -> PackageOut:
    """Create a package."""
    body: PackageIn = req.body
    async with req.ctx.pool.acquire() as conn:
        try:
            package = await create_package(conn, name=body.name, description=body.description,
                                           limits=body.limits(), features=body.features, is_active=body.is_active)
        except PackageNameTaken as exc:
            raise conflict(str(exc)) from None
    await audit(req, "package_created", "package", package.id, **_limits_audit(body))
    return PackageOut.of(package)


@api.route("GET", "/packages/{package_id:int}", tag="packages", response=PackageOut, roles=ADMIN, errors=(404,))
async def get_package(req: Req) -> PackageOut:
    """One package."""
    async with req.ctx.pool.acquire() as conn:
        package = await package_by_id(conn, req.params["package_id"])
    if package is None:
        raise not_found("package")
    return PackageOut.of(package)


@api.route("PUT", "/packages/{package_id:int}", tag="packages", body=PackageIn, response=PackageOut, roles=ADMIN,
           errors=(404, 409))
async def put_package(req: Req) -> PackageOut:
    """Replace a package's fields; its domains keep what they have and grow only within the new limits."""
    body: PackageIn = req.body
    async with req.ctx.pool.acquire() as conn:
        try:
            package = await replace_package(conn, req.params["package_id"], name=body.name,
                                            description=body.description, limits=body.limits(),
                                            features=body.features, is_active=body.is_active)
        except PackageNotFound:
            raise not_found("package") from None
        except PackageNameTaken as exc:
            raise conflict(str(exc)) from None
    await audit(req, "package_updated", "package", package.id, **_limits_audit(body))
    return PackageOut.of(package)


@api.route("DELETE", "/packages/{package_id:int}", tag="packages", status=204, roles=ADMIN, errors=(404,))
async def remove_package(req: Req) -> None:
    """Delete a package; the domains that had it are left without one (no limits)."""
    package_id = req.params["package_id"]
    async with req.ctx.pool.acquire() as conn:
        if not await delete_package(conn, package_id):
            raise not_found("package")
    await audit(req, "package_deleted", "package", package_id)


# --- a domain's package --------------------------------------------------------------------------

async def _domain_package(conn, domain: records.DomainRecord) -> DomainPackageOut:
    package_id = await domain_package_id(conn, domain.id)
    package = await package_by_id(conn, package_id) if package_id is not None else None
    return DomainPackageOut(domain_id=domain.id, domain=domain.name,
                            package=PackageOut.of(package) if package else None)


@api.route("GET", "/domains/{domain_id:int}/package", tag="packages", response=DomainPackageOut, roles=MANAGERS,
           errors=(404,))
async def get_domain_package(req: Req) -> DomainPackageOut:
    """The package of a domain (an owner sees their own domain's)."""
    async with req.ctx.pool.acquire() as conn:
        domain = await records.domain_by_id(conn, req.params["domain_id"])
        if domain is None or not req.me().may_manage_domain(domain.id):
            raise not_found("domain")
        return await _domain_package(conn, domain)


@api.route("PUT", "/domains/{domain_id:int}/package", tag="packages", body=DomainPackageIn,
           response=DomainPackageOut, roles=ADMIN, errors=(404, 409))
async def put_domain_package(req: Req) -> DomainPackageOut:
    """Assign a package to a domain (null: none). What the domain has stays; its growth is checked."""
    package_id = req.body.package_id
    async with req.ctx.pool.acquire() as conn:
        domain = await records.domain_by_id(conn, req.params["domain_id"])
        if domain is None:
            raise not_found("domain")
        try:
            assigned = await assign_package(conn, domain.id, package_id)
        except PackageNotFound:
            raise ApiError(404, "not_found", "package not found") from None
        except LimitExceeded as exc:
            raise conflict(str(exc)) from None
        if not assigned:
            raise not_found("domain")
        result = await _domain_package(conn, domain)
    await audit(req, "domain_package_set", "domain", domain.id, domain=domain.name, package_id=package_id)
    return result


# --- templates -----------------------------------------------------------------------------------

@api.route("GET", "/package-templates", tag="packages", response=[TemplateOut], roles=ADMIN)
async def get_templates(req: Req) -> list[TemplateOut]:
    """Every package template, by name."""
    async with req.ctx.pool.acquire() as conn:
        return [TemplateOut.of(t) for t in await list_templates(conn)]


@api.route("POST", "/package-templates", tag="packages", body=TemplateIn, response=TemplateOut, status=201,
           roles=ADMIN, errors=(409,))
async def post_template(req: Req) -> TemplateOut:
    """Create a package template."""
    body: TemplateIn = req.body
    async with req.ctx.pool.acquire() as conn:
        try:
            template = await create_template(conn, name=body.name, description=body.description,
                                             limits=body.limits(), features=body.features)
        except PackageNameTaken as exc:
            raise conflict(str(exc)) from None
    await audit(req, "package_template_created", "package_template", template.id, **_limits_audit(body))
    return TemplateOut.of(template)


@api.route("DELETE", "/package-templates/{template_id:int}", tag="packages", status=204, roles=ADMIN,
           errors=(404,))
async def remove_template(req: Req) -> None:
    """Delete a template; packages made from it keep their limits."""
    template_id = req.params["template_id"]
    async with req.ctx.pool.acquire() as conn:
        if not await delete_template(conn, template_id):
            raise not_found("package template")
    await audit(req, "package_template_deleted", "package_template", template_id)


@api.route("POST", "/package-templates/{template_id:int}/instantiate", tag="packages", body=InstantiateIn,
           response=PackageOut, status=201, roles=ADMIN, errors=(404, 409))
async def instantiate(req: Req) -> PackageOut:
    """A new package with the template's limits and features."""
    template_id = req.params["template_id"]
    async with req.ctx.pool.acquire() as conn:
        try:
            package = await instantiate_template(conn, template_id, name=req.body.name,
                                                 description=req.body.description)
        except PackageNotFound:
            raise not_found("package template") from None
        except PackageNameTaken as exc:
            raise conflict(str(exc)) from None
    await audit(req, "package_created", "package", package.id, template_id=template_id, name=package.name)
    return PackageOut.of(package)
