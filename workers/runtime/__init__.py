"""The generic runtime: settings, the broker topology, confirmed publishing, the idempotent
consumer, the outbox relay, the ``Service`` declaration and the catalog of services by name.
It imports no service and no operator tool (tests/unit/test_layering.py keeps it so)."""
