"""API errors: raised anywhere in a handler, rendered once as `{error, message, request_id}`."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error with a stable machine-readable `error` code and a human `message`."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def unauthorized(message: str = "authentication required") -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="whymail"'})


def forbidden(message: str = "not allowed for your role") -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(what: str = "resource") -> ApiError:
    # Someone else's object is 404 too: its existence is not revealed.
    return ApiError(404, "not_found", f"{what} not found")


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)
