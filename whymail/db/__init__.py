"""Database access: connection pools, migrations, and the SQL of each concern (one module each)."""
