"""Alembic environment of the operations database (archived dead letters, the audit log)."""

from db.migrations._env import run_migrations

run_migrations()
