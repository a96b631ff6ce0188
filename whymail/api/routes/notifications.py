"""notifications routes (being written)."""
