"""Alembic migrations of the staging schema (shipped with the package)."""
