"""The migrations of services whose database is on MariaDB: ``<service>/env.py`` and
``<service>/versions/``, one tree per service as for PostgreSQL, with MariaDB's types written
out (``db.migrate`` chooses the tree by the database URL's scheme)."""
