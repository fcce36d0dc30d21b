"""Alembic environment of the shipping service's own database."""

from db.migrations._env import run_migrations

run_migrations()
