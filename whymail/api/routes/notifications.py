"""Notifications (REST) and the live event socket `GET /ws`.

The socket authenticates with `?token=<access token | API token>` or `Authorization: Bearer`, says
`{"type": "connected", "last_id"}`, then sends the user's events as `{"id", "type", "data", "ts"}`.
`?since=<event id>` first replays what was missed, or sends `{"type": "resync"}` when the hub no
longer has it (the client then reloads). A text `{"type": "ping"}` is answered with a pong; Sanic
also pings at the protocol level (WEBSOCKET_PING_INTERVAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Literal

import orjson
from pydantic import BaseModel, Field
from sanic import Request, Sanic

from whymail.api import tokens
from whymail.api.errors import not_found
from whymail.api.models import _In
from whymail.api.routes import api
from whymail.api.routes.common import ADMIN, audit
from whymail.api.spec import Req
from whymail.notify import alerts, store
from whymail.notify.eventlog import Catchup
from whymail.notify.fanout import RESYNC

log = logging.getLogger("whymail.http.ws")

WS_UNAUTHORIZED = 4401
WS_UNAVAILABLE = 1013  # "try again later": this gateway has no event feed


class NotificationOut(BaseModel):
    id: int
    type: str
    title: str
    body: str
    data: dict
    is_read: bool
    read_at: dt.datetime | None = None
    created_at: dt.datetime


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    total: int
    unread: int
    limit: int
    offset: int


class NotificationQuery(_In):
    unread: bool = False
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class BatchIn(_In):
    ids: list[int] = Field(min_length=1, max_length=1000)
    action: Literal["read", "delete"]


class BatchOut(BaseModel):
    action: str
    ids: list[int] = Field(description="The ids that were yours and were changed")


class CountOut(BaseModel):
    updated: int


class PreferenceOut(BaseModel):
    type: str
    enabled: bool
    via_websocket: bool
    via_email: bool


class PreferenceIn(_In):
    type: Literal[store.NOTIFICATION_TYPES]  # type: ignore[valid-type]
    enabled: bool = True
    via_websocket: bool = True
    via_email: bool = False


class PreferencesIn(_In):
    preferences: list[PreferenceIn] = Field(min_length=1, max_length=len(store.NOTIFICATION_TYPES))


def _out(note: store.Notification) -> NotificationOut:
    return NotificationOut(
        id=note.id, type=note.type, title=note.title, body=note.body, data=note.data, is_read=note.is_read,
        read_at=note.read_at, created_at=note.created_at,
    )


@api.route("GET", "/notifications", tag="notifications", query=NotificationQuery, response=NotificationPage)
async def list_notifications(req: Req) -> NotificationPage:
    """Your notifications, newest first (`unread=true` for the unread ones only)."""
    q: NotificationQuery = req.query
    async with req.ctx.pool.acquire() as conn:
        notes, total, unread = await store.list_notifications(
            conn, req.me().user_id, unread_only=q.unread, limit=q.limit, offset=q.offset
        )
    return NotificationPage(items=[_out(n) for n in notes], total=total, unread=unread, limit=q.limit,
                            offset=q.offset)


@api.route("POST", "/notifications/{notification_id:int}/read", tag="notifications", errors=(404,))
async def read_notification(req: Req) -> None:
    """Mark one of your notifications read."""
    async with req.ctx.pool.acquire() as conn:
        if not await store.mark_read(conn, req.me().user_id, [req.params["notification_id"]]):
            raise not_found("notification")


@api.route("POST", "/notifications/read-all", tag="notifications", response=CountOut)
async def read_all_notifications(req: Req) -> CountOut:
    """Mark all your notifications read."""
    async with req.ctx.pool.acquire() as conn:
        return CountOut(updated=await store.mark_all_read(conn, req.me().user_id))


@api.route("DELETE", "/notifications/{notification_id:int}", tag="notifications", errors=(404,))
async def delete_notification(req: Req) -> None:
    """Delete one of your notifications."""
    async with req.ctx.pool.acquire() as conn:
        if not await store.delete_notifications(conn, req.me().user_id, [req.params["notification_id"]]):
            raise not_found("notification")


@api.route("POST", "/notifications/batch", tag="notifications", body=BatchIn, response=BatchOut)
async def batch_notifications(req: Req) -> BatchOut:
    """Mark read or delete several notifications; ids that are not yours are ignored (and not listed)."""
    body: BatchIn = req.body
    ids = sorted(set(body.ids))
    async with req.ctx.pool.acquire() as conn:
        if body.action == "read":
            done = await store.mark_read(conn, req.me().user_id, ids)
        else:
            done = await store.delete_notifications(conn, req.me().user_id, ids)
    return BatchOut(action=body.action, ids=sorted(done))


@api.route("GET", "/notifications/preferences", tag="notifications", response=[PreferenceOut])
async def get_preferences(req: Req) -> list[PreferenceOut]:
    """Which notifications you get, per type (types you never set show the defaults)."""
    async with req.ctx.pool.acquire() as conn:
        prefs = await store.preferences(conn, req.me().user_id)
    return [PreferenceOut(**vars_of(p)) for p in prefs]


@api.route("PUT", "/notifications/preferences", tag="notifications", body=PreferencesIn, response=[PreferenceOut])
async def put_preferences(req: Req) -> list[PreferenceOut]:
    """Change the preferences of the types given; the others stay as they are."""
    body: PreferencesIn = req.body
    wanted = [store.Preference(type=p.type, enabled=p.enabled, via_websocket=p.via_websocket, via_email=p.via_email)
              for p in body.preferences]
    async with req.ctx.pool.acquire() as conn, conn.transaction():
        await store.set_preferences(conn, req.me().user_id, wanted)
        prefs = await store.preferences(conn, req.me().user_id)
    return [PreferenceOut(**vars_of(p)) for p in prefs]


class SystemAlertIn(_In):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field("", max_length=2000)


class SystemAlertOut(BaseModel):
    recipients: int = Field(description="How many admins got the alert")


@api.route("POST", "/system/alerts", tag="system", body=SystemAlertIn, response=SystemAlertOut, status=201,
           roles=ADMIN)
async def broadcast_system_alert(req: Req) -> SystemAlertOut:
    """Send a `system_alert` notification to every active admin (stored, and pushed to their sockets)."""
    body: SystemAlertIn = req.body
    caller = req.me()
    async with req.ctx.pool.acquire() as conn:
        stored = await alerts.broadcast_system_alert(conn, body.title, body.body, caller.email)
    if req.ctx.live is not None and stored:  # fire-and-forget: the rows are the truth
        req.ctx.live.announce([store.notification_event(n) for n in stored])
    await audit(req, "system_alert_sent", "system_alert", stored[0].id if stored else "", title=body.title,
                recipients=len(stored))
    return SystemAlertOut(recipients=len(stored))


def vars_of(pref: store.Preference) -> dict:
    return {"type": pref.type, "enabled": pref.enabled, "via_websocket": pref.via_websocket,
            "via_email": pref.via_email}


# --- the live socket -------------------------------------------------------------------------------


async def _socket_caller(request: Request) -> tuple[tokens.Caller | None, float | None]:
    """The caller of a socket (`?token=` or a Bearer header, an access JWT or an API token) and when
    its access token expires (None for an API token)."""
    token = request.args.get("token", "")
    if not token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value if scheme.lower() == "bearer" else ""
    token = token.strip()
    if not token or len(token) > 4096:
        return None, None
    ctx = request.app.ctx.api
    expires = None
    async with ctx.pool.acquire() as conn:
        if token.startswith(tokens.API_TOKEN_PREFIX):
            user_id = await tokens.user_of_api_token(conn, token)
        else:
            user_id = tokens.decode_access_token(ctx.secret, token)
            expires = tokens.access_token_expiry(ctx.secret, token)
        caller = await tokens.caller_by_id(conn, user_id) if user_id is not None else None
    return caller, expires


def _since(request: Request) -> int | None:
    raw = request.args.get("since", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def _answer_pings(ws) -> None:
    """Read the client's messages: a JSON ping gets a pong; anything else is ignored."""
    while True:
        message = await ws.recv()
        if message is None:
            return
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            if orjson.loads(message).get("type") == "ping":
                await ws.send(orjson.dumps({"type": "pong", "ts": time.time()}).decode())


async def live_events(request: Request, ws) -> None:
    """`GET /ws`: the caller's live events (see the module docstring)."""
    caller, expires = await _socket_caller(request)
    if caller is None:
        await ws.close(code=WS_UNAUTHORIZED, reason="unauthorized")
        return
    feed = request.app.ctx.api.live
    if feed is None:
        await ws.close(code=WS_UNAVAILABLE, reason="live events unavailable")
        return
    sub = await feed.subscribe(caller.user_id)
    reader = asyncio.get_running_loop().create_task(_answer_pings(ws))
    try:
        since = _since(request)
        try:
            missed = await asyncio.wait_for(feed.catch_up(caller.user_id, since or 0), 5.0)
        except Exception as exc:  # the hub is away: live events resume with the feed, the past is lost
            log.warning("catch-up for user %d failed: %r", caller.user_id, exc)
            missed = Catchup(resync=True, last_id=since or 0)
        sub.last_id = missed.last_id if since is None else since
        await ws.send(orjson.dumps({"type": "connected", "user_id": caller.user_id, "last_id": missed.last_id,
                                    "ts": time.time()}).decode())
        if since is not None:
            if missed.resync:
                await ws.send(orjson.dumps({"type": RESYNC, "last_id": missed.last_id}).decode())
                sub.last_id = missed.last_id
            for event in missed.events:
                await ws.send(orjson.dumps(event.wire()).decode())
                sub.last_id = max(sub.last_id, event.id)
        while not reader.done():
            getter = asyncio.ensure_future(sub.next())
            # An access token is only good until it expires: then the client must reconnect with a
            # fresh one (and `since=` catches it up), as for any other request.
            left = None if expires is None else max(0.0, expires - time.time())
            await asyncio.wait({getter, reader}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if not reader.done():
                    await ws.close(code=WS_UNAUTHORIZED, reason="token expired")
                break
            item = getter.result()
            if item == RESYNC:
                await ws.send(orjson.dumps({"type": RESYNC}).decode())
            else:
                await ws.send(orjson.dumps(item.wire()).decode())
    except (TimeoutError, ConnectionError) as exc:
        log.info("socket of user %d ended: %r", caller.user_id, exc)
    finally:
        feed.unsubscribe(sub)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def install_websocket(app: Sanic) -> None:
    """Serve the live socket at `/ws` and `/api/v1/ws`."""
    app.add_websocket_route(live_events, "/ws", name="live_events")
    app.add_websocket_route(live_events, api.prefix + "/ws", name="live_events_v1")
