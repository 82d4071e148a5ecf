"""Example partners built on the Patchbay partner SDK (``patchbay.firehose``)."""
