"""ops routes (being written)."""
