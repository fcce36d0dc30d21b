"""One Alembic environment per service: ``<service>/env.py`` and ``<service>/versions/``.

Each service migrates its own database on its own schedule, with its own ``alembic_version``
table; ``db.migrate`` builds the Alembic configuration in code.
"""
