"""Live events and notifications: event models, the hub's per-user log, the shard-side publisher,
the gateway-side fan-out, and the SQL of the `notifications` tables. No Ray in here."""
