"""Alembic environment of the inventory service's own database."""

from db.migrations._env import run_migrations

run_migrations()
