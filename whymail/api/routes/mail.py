"""mail routes (being written)."""
