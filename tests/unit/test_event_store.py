"""The event store's rules that need no server: when to snapshot, what a conflict is."""

from __future__ import annotations

import pytest

from db.event_store import ConcurrencyConflict, crossed_snapshot_boundary
from workers.runtime.errors import is_transient


@pytest.mark.parametrize(
    ("before", "after", "every", "crossed"),
    [
        (0, 1, 1, True),
        (0, 1, 20, False),
        (19, 20, 20, True),
        (20, 21, 20, False),
        (18, 22, 20, True),  # several events appended at once, across a multiple
        (0, 40, 20, True),
        (5, 6, 0, False),  # 0: never
        (5, 6, -1, False),
    ],
)
def test_a_snapshot_is_due_when_the_stream_passes_a_multiple(
    before: int, after: int, every: int, crossed: bool
) -> None:
    assert crossed_snapshot_boundary(before, after, every) is crossed


def test_a_concurrency_conflict_is_transient_so_the_command_is_retried() -> None:
    conflict = ConcurrencyConflict("order-1", 3)
    assert is_transient(conflict)
    assert "order-1" in str(conflict) and "3" in str(conflict)
