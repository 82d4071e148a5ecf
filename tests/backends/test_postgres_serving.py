"""The deployment's lock on PostgreSQL: serves share it, a command alone takes it only
when no serve holds it, and an ended session releases it."""

from __future__ import annotations

import threading

from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.serving import ServingLock
from tests import infra


def test_serves_share_the_lock_and_a_command_takes_it_only_alone() -> None:
    db = PostgresDatabase(infra.postgres_url(), pool_size=1)
    locks = [ServingLock(db) for _ in range(4)]
    try:
        first, second, command, late = locks
        first.share()
        second.share()  # serves do not wait for each other
        assert command.try_alone() is False
        first.release()
        assert command.try_alone() is False  # one serve is still there
        second.release()
        assert command.try_alone() is True
        started = threading.Event()
        shared = threading.Event()

        def serve() -> None:
            started.set()
            late.share()  # waits until the command is done
            shared.set()

        thread = threading.Thread(target=serve)
        thread.start()
        started.wait()
        assert not shared.wait(0.5)
        command.release()
        assert shared.wait(10)
        thread.join()
        assert ServingLock(db).try_alone() is False
    finally:
        for lock in locks:
            lock.release()
        db.close()
