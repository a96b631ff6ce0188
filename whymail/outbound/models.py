"""The values exchanged with the DeliveryQueue: what to send, and what became of each recipient."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["delivered", "deferred", "failed"]


class OutboundMessage(BaseModel):
    """One queued message for one destination domain: the envelope and the bytes to send."""

    model_config = ConfigDict(frozen=True)

    id: str | int = Field(description="The caller's identifier, used as the key of the results")
    sender: str = Field(description="Reverse-path; '' is the null sender <> of bounces (RFC 5321 §4.5.5)")
    recipients: list[str] = Field(description="Forward-paths, all in the destination domain")
    body: bytes = Field(description="The message as it goes after DATA, CRLF line ends")


class RecipientResult(BaseModel):
    """The outcome of one recipient in one attempt."""

    model_config = ConfigDict(frozen=True)

    recipient: str
    status: Status = Field(description="delivered (2xx), deferred (4xx or no answer), failed (5xx)")
    code: int = Field(description="SMTP reply code, ours (e.g. 451 for a refused connection) when no reply")
    enhanced: str = Field("", description="RFC 3463 status code, e.g. 5.1.1")
    text: str = Field("", description="The remote reply text, or our own explanation")
    remote_host: str = Field("", description="Name of the server that answered, '' when none did")

    @property
    def is_final(self) -> bool:
        """Delivered or failed: nothing more to try for this recipient."""
        return self.status != "deferred"

    @property
    def reply(self) -> str:
        """The reply in one line as it appears in logs and a DSN Diagnostic-Code: `550 5.1.1 text`."""
        return " ".join(part for part in (str(self.code), self.enhanced, self.text) if part)


class DeliveryAttempt(BaseModel):
    """What one `deliver` call did for one message."""

    model_config = ConfigDict(frozen=True)

    message_id: str | int
    domain: str
    results: list[RecipientResult]

    @property
    def delivered(self) -> list[RecipientResult]:
        return [r for r in self.results if r.status == "delivered"]

    @property
    def deferred(self) -> list[RecipientResult]:
        return [r for r in self.results if r.status == "deferred"]

    @property
    def failed(self) -> list[RecipientResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def is_final(self) -> bool:
        """No recipient is left to retry."""
        return all(r.is_final for r in self.results)

    @classmethod
    def from_results(cls, domain: str, results: dict[str | int, list[RecipientResult]]) -> list[DeliveryAttempt]:
        """The per-message view of what `client.deliver` returned."""
        return [cls(message_id=key, domain=domain, results=value) for key, value in results.items()]
