"""What several route modules share: role sets and the audit row of a change made through the API."""

from __future__ import annotations

from whymail.api.spec import Req
from whymail.db.audit import write_audit

ADMIN = ("admin",)
MANAGERS = ("admin", "owner")


async def audit(req: Req, action: str, target_type: str, target_id: object, **details: object) -> None:
    """An audit row for a change the caller made (actor, address, target, details)."""
    caller = req.me()
    await write_audit(
        req.ctx.pool, action, actor_user_id=caller.user_id, actor_email=caller.email,
        actor_ip=req.request.client_ip, target_type=target_type, target_id=str(target_id), details=details,
    )
