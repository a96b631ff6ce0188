"""metrics routes (being written)."""
