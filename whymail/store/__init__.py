"""The mail store: durable delivery of messages into Maildir + PostgreSQL."""
