"""SMTP policy and reply formatting (pure: no sockets, no Ray)."""
