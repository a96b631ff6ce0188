"""search routes (being written)."""
