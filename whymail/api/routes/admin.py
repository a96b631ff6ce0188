"""admin routes (being written)."""
