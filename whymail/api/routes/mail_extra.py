"""mail_extra routes (being written)."""
