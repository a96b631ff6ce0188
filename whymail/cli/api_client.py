"""The HTTP side of `whymailctl`: a small stdlib client for the REST API and the saved login.

The login lives in `~/.config/whymail/ctl.json` (`$WHYMAIL_CTL_CONFIG` overrides the path), mode 0600:
the server's URL, an API token and its id (so that `whymailctl logout` can revoke it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

API_PREFIX = "/api/v1"
DEFAULT_SERVER = "http://127.0.0.1:8080"
TIMEOUT = 60.0  # seconds; generating an RSA-4096 DKIM key on a busy server takes a while


class ApiFailure(Exception):
    """The server refused the request (`status` from it) or could not be reached (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the saved login -----------------------------------------------------------------------------


@dataclass(slots=True)
class Login:
    server: str
    token: str
    token_id: int | None = None
    email: str = ""


def login_path() -> Path:
    configured = os.environ.get("WHYMAIL_CTL_CONFIG")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "whymail" / "ctl.json"


def load_login(path: Path) -> Login | None:
    """The saved login, or None when there is none (a damaged file counts as none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Login(server=str(data["server"]), token=str(data["token"]), token_id=data.get("token_id"),
                     email=str(data.get("email", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_login(path: Path, login: Login) -> None:
    """Write the login readable by the owner only, replacing any earlier one in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file of that name may have had other bits
        json.dump(asdict(login), out, indent=2)
        out.write("\n")
    os.replace(temporary, path)


def normalize_server(url: str) -> str:
    """`host:port` or a URL as `scheme://host[:port][/path]` without a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid server URL {url!r}: use http(s)://host:port")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


# --- requests ------------------------------------------------------------------------------------


class ApiClient:
    """JSON requests to `server` + /api/v1, with the token as a bearer credential."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server
        self.token = token

    def call(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
             token: str | None = None) -> Any:
        """The decoded JSON answer (None for 204); raises ApiFailure with the server's message."""
        url = self.server + API_PREFIX + path
        wanted = {key: value for key, value in (query or {}).items() if value is not None}
        if wanted:
            url += "?" + urllib.parse.urlencode(wanted)
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        credential = token or self.token
        if credential:
            request.add_header("Authorization", f"Bearer {credential}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise ApiFailure(error.code, _error_message(error)) from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            reason = getattr(reason, "strerror", None) or reason
            raise ApiFailure(0, f"cannot reach the server at {self.server}: {reason}") from None
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise ApiFailure(0, f"the server at {self.server} did not answer JSON (is it a WhyMail server?)") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str, **query: Any) -> Any:
        return self.call("DELETE", path, query=query)


def _error_message(error: urllib.error.HTTPError) -> str:
    """The `message` of the server's JSON error, else the HTTP reason."""
    try:
        body = json.loads(error.read() or b"null")
    except (ValueError, OSError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    return f"HTTP {error.code} {error.reason}"
