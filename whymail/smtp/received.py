"""The `Received:` trace header (RFC 5321 §4.4)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime


def received_header(
    *,
    helo: str,
    peer_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    timestamp: float,
) -> bytes:
    """A folded `Received:` header line (CRLF-terminated) for a message accepted now."""
    helo_clean = "".join(ch for ch in helo if ch.isprintable() and ch not in "()\\")[:255] or "unknown"
    lines = [
        f"Received: from {helo_clean} ([{peer_ip}])",
        f"\tby {hostname} (WhyMail) with {protocol} id {queue_id}",
    ]
    if recipient:
        lines.append(f"\tfor <{recipient}>")
    lines[-1] += f"; {email.utils.format_datetime(datetime.fromtimestamp(timestamp, UTC))}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
