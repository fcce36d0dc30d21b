"""`python -m contracts.schemas`: write the snapshots of new versions; report frozen ones
that no longer match their model and snapshots whose model is gone (exit status 1)."""

from __future__ import annotations

import sys

from contracts.schemas import orphan_snapshots, snapshot_all


def main() -> int:
    existing = {path for path in snapshot_all() if path.exists()}
    problems = 0
    for path, text in snapshot_all(write=True).items():
        if path not in existing:
            print(f"wrote {path.name}")
        elif path.read_text(encoding="utf-8") != text:
            problems += 1
            print(
                f"{path.name} differs from its model: released versions are frozen, add a new "
                "version with an upcaster (delete the file only if it was never released)",
                file=sys.stderr,
            )
    for path in orphan_snapshots():
        problems += 1
        print(f"{path.name} has no registered model", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
