"""Routes declared once, with their pydantic models: Sanic routing and the OpenAPI 3 document.

    @api.route("GET", "/domains/{domain_id:int}", tag="domains", response=DomainOut)
    async def get_domain(req: Req) -> DomainOut: ...

Paths use OpenAPI braces; `{name:int}` becomes Sanic's `<name:int>`. The handler gets a `Req` with
the caller (authentication is checked before it runs unless `auth=False`), the validated body and
query models and the path parameters; it returns a model (or a list of them, or None for 204).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from sanic import HTTPResponse, Request

from whymail.api.errors import ApiError
from whymail.api.tokens import Caller

_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")
MAX_ID = 2**63 - 1


@dataclass(slots=True)
class Req:
    """What a handler needs from the request."""

    request: Request
    caller: Caller | None
    body: Any = None
    query: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ctx(self):
        return self.request.app.ctx.api

    def me(self) -> Caller:
        assert self.caller is not None
        return self.caller


@dataclass(slots=True)
class Operation:
    method: str
    path: str
    handler: Callable[[Req], Awaitable[Any]]
    tag: str
    summary: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any
    status: int
    auth: bool
    roles: tuple[str, ...]
    errors: tuple[int, ...]
    upload: bool = False  # the body is multipart/form-data with one binary field `file`
    download: bool = False  # the answer is a file (200, any media type), not JSON

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _within_int64(value: Any, depth: int = 0) -> bool:
    """No integer in a JSON value outside PostgreSQL's bigint (ids, sizes, counts are all bigints)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value <= MAX_ID
    if depth > 32:
        return True  # pydantic's own limits apply to anything this deep
    if isinstance(value, list):
        return all(_within_int64(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(_within_int64(item, depth + 1) for item in value.values())
    return True


def validation_message(error: ValidationError, where: str) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or where
    return f"{where}: {loc}: {first['msg']}"


class Api:
    def __init__(self, prefix: str = "/api/v1") -> None:
        self.prefix = prefix
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        tag: str,
        summary: str = "",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        auth: bool = True,
        roles: tuple[str, ...] = (),
        errors: tuple[int, ...] = (),
        upload: bool = False,
        download: bool = False,
    ):
        def register(handler):
            self.operations.append(Operation(
                method.upper(), path, handler, tag, summary or (handler.__doc__ or "").strip().split("\n")[0],
                body, query, response, status, auth, roles, errors, upload, download,
            ))
            return handler

        return register

    def install(self, app, authenticate: Callable[[Request], Awaitable[Caller]]) -> None:
        """Add every operation to the Sanic `app`; `authenticate` raises ApiError 401 when it must."""
        for op in self.operations:
            sanic_path = self.prefix + _PARAM.sub(
                lambda m: f"<{m.group(1)}:{m.group(2)}>" if m.group(2) else f"<{m.group(1)}>", op.path
            )
            app.add_route(self._wrap(op, authenticate), sanic_path, methods=[op.method], name=op.operation_id)

    def _wrap(self, op: Operation, authenticate):
        async def endpoint(request: Request, **params):
            for name, value in params.items():
                # Ids are PostgreSQL bigints: anything outside cannot name an object (and would make
                # the driver fail); answered like any unknown id.
                if isinstance(value, int) and not 0 < value <= MAX_ID:
                    raise ApiError(404, "not_found", f"{name} {value} not found")
            caller = await authenticate(request) if op.auth else None
            if op.roles and (caller is None or caller.role not in op.roles):
                raise ApiError(403, "forbidden", "not allowed for your role")
            req = Req(request, caller, params=params)
            if op.body is not None:
                # PostgreSQL text cannot hold NUL; no field of ours has a use for it.
                if b"\\u0000" in (request.body or b""):
                    raise ApiError(400, "bad_request", "the body contains a NUL character (\\u0000)")
                try:
                    raw = orjson.loads(request.body or b"null")
                except orjson.JSONDecodeError:
                    raise ApiError(400, "bad_request", "the body is not valid JSON") from None
                if not _within_int64(raw):
                    raise ApiError(400, "invalid_body", "body: a number is out of range (64-bit integers)")
                try:
                    req.body = op.body.model_validate(raw)
                except ValidationError as exc:
                    raise ApiError(400, "invalid_body", validation_message(exc, "body")) from None
            if op.query is not None:
                values = {key: request.args.get(key) for key in request.args}
                if any("\x00" in key or "\x00" in (value or "") for key, value in values.items()):
                    raise ApiError(400, "invalid_query", "query: NUL characters are not allowed")
                try:
                    req.query = op.query.model_validate(values)
                except ValidationError as exc:
                    raise ApiError(400, "invalid_query", validation_message(exc, "query")) from None
            result = await op.handler(req)
            if isinstance(result, HTTPResponse):
                return result
            if result is None:
                return HTTPResponse(status=204)
            return _json(op.status, _dump(result))

        endpoint.__name__ = op.operation_id
        return endpoint

    # -- OpenAPI --------------------------------------------------------------------------------------

    def openapi(self, title: str, version: str) -> dict:
        schemas: dict[str, Any] = {"Error": {
            "type": "object", "required": ["error", "message", "request_id"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                           "request_id": {"type": "string"}},
        }}

        def ref(model: type[BaseModel]) -> dict:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        def error_response(text: str) -> dict:
            return {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

        paths: dict[str, dict] = {}
        for op in self.operations:
            path = self.prefix + _PARAM.sub(lambda m: "{" + m.group(1) + "}", op.path)
            entry: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
            parameters = [
                {"name": m.group(1), "in": "path", "required": True,
                 "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}
                 if m.group(2) == "int" else {"type": "string"}}
                for m in _PARAM.finditer(op.path)
            ]
            if op.query is not None:
                for name, info in op.query.model_fields.items():
                    schema = op.query.model_json_schema()["properties"][name]
                    parameters.append({"name": name, "in": "query", "required": info.is_required(), "schema": schema})
            if parameters:
                entry["parameters"] = parameters
            if op.body is not None:
                entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(op.body)}}}
            elif op.upload:
                entry["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }}}}
            responses: dict[str, Any] = {}
            if op.download:
                responses["200"] = {"description": "the file", "content": {
                    "*/*": {"schema": {"type": "string", "format": "binary"}}}}
            elif op.response is None:
                responses[str(op.status if op.status != 200 else 204)] = {"description": "done"}
            else:
                model = op.response
                many = isinstance(model, list)
                schema = {"type": "array", "items": ref(model[0])} if many else ref(model)
                responses[str(op.status)] = {"description": "OK", "content": {"application/json": {"schema": schema}}}
            responses["400"] = error_response("invalid input")
            if op.auth:
                responses["401"] = error_response("not authenticated")
                responses["403"] = error_response("not allowed")
            for code in op.errors:
                responses[str(code)] = error_response({404: "not found", 409: "conflict", 413: "too large"}.get(code, "error"))
            responses["429"] = error_response("rate limited")
            entry["responses"] = responses
            if op.auth:
                entry["security"] = [{"bearer": []}]
            paths.setdefault(path, {})[op.method.lower()] = entry
        return {
            "openapi": "3.0.3",
            "info": {"title": title, "version": version},
            "paths": paths,
            "components": {"schemas": schemas,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        }
