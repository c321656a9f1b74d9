"""Where Gatepass is put together: settings read from the environment (the one place that reads it), the
database brought to its schema, and the broker's application assembled from the API, the web pages and the
background jobs (outbox relay, notifier, SIEM forwarder).

The packages depend on each other in one direction only (tests/test_architecture.py keeps it so):

    cli ──▶ assembly ──▶ approvals ──▶ broker ◀── migrations
                    └──────────────────────────▶ migrations
    gateway: talks to the broker over HTTP only; imports none of the above
"""
