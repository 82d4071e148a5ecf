"""Commits of the segment engine that run while it evaluates the next batches.

A commit of the audience store is mostly the database's own work (B-tree inserts, pages
written to the log), which runs without Python's GIL: on a second core it overlaps with the
evaluation of the next part of a chunk. :class:`BackgroundCommits` runs one commit at a
time on a thread of its own and keeps what that commit writes readable meanwhile: the next
part's users are read through :meth:`BackgroundCommits.users`, which gives the states of the
commit in flight (a copy: the commit still encodes the original) before the store's.

One commit in flight at most: :meth:`BackgroundCommits.submit` waits for the previous one,
and :meth:`BackgroundCommits.wait` raises what it raised. A caller that gets an error there
must drop whatever it built on the failed commit (the segment stage starts a new engine from
the stored checkpoint, as after any failed commit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec

from patchbay.backends.abstract import AudienceStore
from patchbay.backends.records import Checkpoint, SegmentChanges, SegmentUser, Since

_encode = msgspec.msgpack.Encoder().encode
_decode_user = msgspec.msgpack.Decoder(SegmentUser).decode


class BackgroundCommits:
    """Runs an :class:`AudienceStore`'s commits on a thread of its own, one at a time; see
    the module documentation. Used from one thread (the stage's)."""

    def __init__(self, store: AudienceStore) -> None:
        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="patchbay-segment-commit")
        self._in_flight: Future[None] | None = None
        #: The users the commit in flight writes (``None``: it drops them).
        self._written: dict[int, SegmentUser | None] = {}

    def submit(
        self, changes: SegmentChanges, checkpoint: Checkpoint | None, since: Since | None
    ) -> None:
        """Start committing ``changes`` once the previous commit finished (raising what it
        raised). ``changes`` belongs to the commit from now on: the caller must not change
        it or the users in it."""
        self.wait()
        written: dict[int, SegmentUser | None] = {u.mpid: u for u in changes.users}
        written.update(dict.fromkeys(changes.dropped_users))
        self._written = written
        self._in_flight = self._executor.submit(self._store.commit, changes, checkpoint, since)

    def wait(self) -> None:
        """Wait for the commit in flight, if any; raise what it raised."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            in_flight.result()
        finally:
            self._written = {}

    def users(self, mpids: Collection[int]) -> dict[int, SegmentUser]:
        """The states of those of ``mpids`` that have one, as they are once the commit in
        flight is done (copies of those it writes)."""
        written = self._written
        if not written:
            return self._store.users(mpids)
        found: dict[int, SegmentUser] = {}
        rest = []
        for mpid in mpids:
            if mpid not in written:
                rest.append(mpid)
            elif (user := written[mpid]) is not None:
                found[mpid] = _decode_user(_encode(user))
        found.update(self._store.users(rest))
        return found

    def close(self) -> None:
        """Wait for the commit in flight (its error is dropped: the caller is done) and
        stop the thread."""
        try:
            with contextlib.suppress(Exception):
                self.wait()
        finally:
            self._executor.shutdown()
