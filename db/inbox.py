"""The inbox: the idempotent consumer's memory of what each handler has applied.

A handler records (consumer, message_id) in the same transaction as its effects. The
primary key, not the isolation level, makes a duplicate lose: a concurrent second insert
waits for the first transaction and then finds the row.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables import inbox_table


async def record(conn: AsyncConnection, consumer: str, message_id: str, type_: str) -> bool:
    """True if this is the first time ``consumer`` sees ``message_id``."""
    statement = (
        insert(inbox_table)
        .values(consumer=consumer, message_id=message_id, type=type_)
        .on_conflict_do_nothing()
        .returning(sa.literal(1))
    )
    return (await conn.execute(statement)).first() is not None


DELETE_EXPIRED = "DELETE FROM inbox WHERE received_at < now() - make_interval(secs => $1::float8)"
