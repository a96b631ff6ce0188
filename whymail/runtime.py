"""What every actor needs to know to start: the validated config plus resolved paths and DSN."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from whymail.config import Config


class Runtime(BaseModel):
    """Resolved settings handed to every actor (picklable, validated once in `whymail serve`)."""

    config: Config
    state_dir: str
    dsn: str
    redis_addr: str = ""

    @property
    def maildir_root(self) -> Path:
        configured = self.config.storage.maildir_root
        return Path(configured).expanduser() if configured else Path(self.state_dir) / "maildir"
