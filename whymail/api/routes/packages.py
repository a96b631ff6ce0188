"""packages routes (being written)."""
