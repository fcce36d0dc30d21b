"""Alembic environment of the order_view service's own database."""

from db.migrations._env import run_migrations

run_migrations()
