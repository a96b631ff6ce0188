"""Sender authentication for inbound mail: SPF (RFC 7208), DKIM (RFC 6376, RFC 8463), DMARC (RFC 7489)
and the Authentication-Results header field (RFC 8601). Start with `checks.authenticate`."""
