"""Outbound delivery, the library half: routing (MX or smarthost), the SMTP client that hands a batch of
messages for one destination domain to a remote server, and the DSN (bounce) builder.

The DeliveryQueue actor owns retries and persistence; everything here is a plain async function of its
inputs, so it can be tested against loopback servers without Ray or a database.
"""

from whymail.outbound.models import DeliveryAttempt, OutboundMessage, RecipientResult

__all__ = ["DeliveryAttempt", "OutboundMessage", "RecipientResult"]
