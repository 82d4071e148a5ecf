"""The root of every error Patchbay raises on purpose.

Catch :class:`PatchbayError` to handle anything Patchbay reports (bad input, a refused
configuration, a partner that failed, a name already taken); anything else is a bug. The
module imports nothing, so the partner SDK (:mod:`patchbay.firehose`) can share the root
without pulling in the server.
"""

from __future__ import annotations


class PatchbayError(Exception):
    """Something Patchbay refused or could not do, with a message meant for people."""
