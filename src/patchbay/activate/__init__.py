"""Activate: forwarding resolved batches to partner modules (event outputs) over Firehose.

:mod:`.translate` turns one resolved batch into the ``event_processing_request`` a module
receives (pure functions, no I/O); the delivery engine sends it. See docs/activate.md.
"""
