"""Alembic environment of the payment service's own database on MariaDB."""

from db.migrations._env import run_migrations

run_migrations()
