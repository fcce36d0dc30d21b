"""Reading whatever the broker delivers, so that one odd message cannot take a connection
down (found by tests/integration/test_fuzz_messages.py).

pamqp (under aio-pika) raises on a short string that is not UTF-8 (a message id, a type, a
header's name) and on a timestamp past the year 9999, and aiormq then closes the whole
connection: one such message from a foreign client took every consumer of a worker down at
each redelivery, until the broker dead-lettered it with no reason of ours. Read leniently,
such a string has U+FFFD for its bad bytes and such a timestamp is absent: the message
reaches the consumer, which dead-letters it with its reason like any other bad message.

This replaces three of pamqp's decoders in its lookup tables (pamqp is pinned; a test
sends such messages, so an upgrade that moves them fails loudly).
"""

from __future__ import annotations

from pamqp import decode as pamqp_decode
from pamqp.common import FieldTable, FieldValue


def read_amqp_leniently() -> None:
    """Make this process's AMQP client read leniently (see the module). Idempotent."""
    if getattr(pamqp_decode, "_fleet_lenient", False):
        return
    strict_short_str, strict_timestamp = pamqp_decode.short_str, pamqp_decode.timestamp
    strict_table = pamqp_decode.field_table

    def short_str(value: bytes) -> tuple[int, str]:
        try:
            return strict_short_str(value)
        except UnicodeDecodeError:
            length = value[0]
            return length + 1, value[1 : length + 1].decode("utf-8", errors="replace")

    def timestamp(value: bytes) -> tuple[int, FieldValue]:
        try:
            return strict_timestamp(value)
        except (ValueError, OverflowError, OSError):  # pamqp's own ValueError included
            return 8, None

    def field_table(value: bytes) -> tuple[int, FieldTable]:
        try:
            return strict_table(value)
        except UnicodeDecodeError:  # a name that is not UTF-8: pamqp's loop, leniently
            end = 4 + int.from_bytes(value[0:4], "big")
            offset, table = 4, FieldTable()
            while offset < end:
                name_end = offset + 1 + value[offset]
                name = value[offset + 1 : name_end].decode("utf-8", errors="replace")
                consumed, table[name] = pamqp_decode.embedded_value(value[name_end:])
                offset = name_end + consumed
            return end, table

    pamqp_decode.METHODS.update(shortstr=short_str, timestamp=timestamp, table=field_table)
    pamqp_decode.TABLE_MAPPING.update({b"T": timestamp, b"F": field_table})
    pamqp_decode._fleet_lenient = True  # type: ignore[attr-defined]
