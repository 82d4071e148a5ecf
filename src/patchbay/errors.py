"""The root of every error Patchbay raises on purpose.

Catch :class:`PatchbayError` to handle anything Patchbay reports (bad input, a refused
configuration, a partner that failed, a name already taken); anything else is a bug. The
module imports only the standard library, so the partner SDK (:mod:`patchbay.firehose`) can
share the root without pulling in the server. :class:`StorageFull` is here too: the stores,
the secrets key and the file outputs all raise it; and :class:`LogUnavailable`, which the
Events API answers like it.
"""

from __future__ import annotations

import errno


class PatchbayError(Exception):
    """Something Patchbay refused or could not do, with a message meant for people."""


class StorageFull(PatchbayError):
    """The disk, the quota or the store's size limit is full: what was being written was not
    written (a transaction rolled back, a file left as it was); retry once there is room.

    Raised where storage is written (the SQLite backend for ``SQLITE_FULL``, file writes for
    ``ENOSPC`` and ``EDQUOT``), so that no caller reads database or system messages."""

    def __init__(self, where: object, detail: str) -> None:
        super().__init__(f"storage is full: {where}: {detail}")
        self.where = str(where)

    @classmethod
    def of(cls, exc: OSError, where: object) -> StorageFull | None:
        """The error for ``exc`` if it says there is no room left (``ENOSPC``, ``EDQUOT``),
        else ``None``."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return cls(where, exc.strerror or str(exc))
        return None


class LogUnavailable(PatchbayError):
    """The batch log cannot be reached (a Kafka cluster down, or out of reach): the append or
    read did not complete; retry later. An append that raises it acknowledged none of its
    batches, though a log that is not atomic (Kafka) may hold some of them, or store them
    later (see :meth:`patchbay.backends.abstract.BatchLog.append` and ``unsettled``)."""

    def __init__(self, where: object, detail: str) -> None:
        super().__init__(f"the batch log is unavailable: {where}: {detail}")
        self.where = str(where)


class ResolveConflict(PatchbayError):
    """A resolve commit was refused: another resolver's commit changed the identity links
    or profiles it was decided on since they were read (the scale-out mode, where several
    resolvers share the state). Nothing was written; resolve again from a fresh read. An
    identity request that met it too often in a row is answered 503 with ``Retry-After``."""
