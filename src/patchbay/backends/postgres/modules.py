"""The module store on PostgreSQL: the ``modules`` table and its history,
``module_registrations``.

The columns and their encoding are the embedded store's
(:func:`~patchbay.backends.sqlite.modules.module_row`): the target in ``transport`` and
columns of its own, the partner's token sealed with the secrets key
(:mod:`patchbay.secretbox`, the key file every process of a deployment shares), so the
database never holds it in plain text; settings as JSON text (documents read whole, never
queried), the raw registration as ``bytea``.

Concurrency: every call is one transaction. :meth:`PostgresModuleStore.put_module` is one
``INSERT ... ON CONFLICT (name) DO UPDATE`` that keeps ``created_at_ms`` and returns it, so
two processes registering the same module at once are serialised on its row (the last one
wins, each adds its registration to the history) and neither can lose the first
``created_at_ms``. A delete waits for a registration in progress on the same row and then
removes its history too (the history rows are deleted after the module row is locked).
"""

from __future__ import annotations

import msgspec

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.records import ModuleRecord, ModuleRegistrationEntry
from patchbay.backends.sqlite.modules import COLUMNS, module_from_row, module_row
from patchbay.secretbox import SecretBox

MIGRATIONS = [
    """
    CREATE TABLE modules (
        name TEXT COLLATE "C" PRIMARY KEY,
        display_name TEXT NOT NULL,
        version TEXT NOT NULL,
        description TEXT,
        sdk_version TEXT,
        transport TEXT NOT NULL,
        url TEXT,
        token TEXT,
        lambda_function TEXT,
        lambda_region TEXT,
        lambda_endpoint_url TEXT,
        permissions TEXT NOT NULL,
        account_settings TEXT NOT NULL,
        connection_settings TEXT NOT NULL,
        audience_subscription_settings TEXT NOT NULL,
        supported_event_types TEXT NOT NULL,
        supported_runtime_environments TEXT NOT NULL,
        supported_system_notification_types TEXT NOT NULL,
        audience BOOLEAN NOT NULL,
        dsr BOOLEAN NOT NULL,
        supported_dsr_types TEXT NOT NULL,
        registration BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE TABLE module_registrations (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        registered_at_ms BIGINT NOT NULL,
        registration BYTEA NOT NULL
    );
    CREATE INDEX module_registrations_name ON module_registrations (name, id);
    """
]

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM modules"
_UPSERT = (
    f"INSERT INTO modules ({', '.join(COLUMNS)}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
    " ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("name", "created_at_ms"))
    + " RETURNING created_at_ms"
)


class PostgresModuleStore:
    """Registered partner modules in PostgreSQL."""

    def __init__(self, db: PostgresDatabase, box: SecretBox) -> None:
        self._db = db
        self._box = box
        db.migrate("modules", MIGRATIONS)

    def put_module(self, module: ModuleRecord) -> ModuleRecord:
        """Insert or replace ``module`` (keeping the first ``created_at_ms``) and append its
        registration to the history, in one transaction."""
        row = module_row(module, self._box)
        with self._db.transaction() as conn:
            kept = conn.execute(_UPSERT, row).fetchone()
            conn.execute(
                "INSERT INTO module_registrations (name, version, registered_at_ms,"
                " registration) VALUES (%s, %s, %s, %s)",
                (module.name, module.version, module.updated_at_ms, module.registration),
            )
        assert kept is not None
        return msgspec.structs.replace(module, created_at_ms=int(kept[0]))

    def get_module(self, name: str) -> ModuleRecord | None:
        """The module with this name."""
        with self._db.transaction() as conn:
            row = conn.execute(f"{_SELECT} WHERE name = %s", (name,)).fetchone()
        return module_from_row(row, self._box) if row else None

    def list_modules(self) -> list[ModuleRecord]:
        """Every module, by name."""
        with self._db.transaction() as conn:
            rows = conn.execute(f"{_SELECT} ORDER BY name").fetchall()
        return [module_from_row(r, self._box) for r in rows]

    def delete_module(self, name: str) -> bool:
        """Remove a module and its history; whether it existed."""
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM modules WHERE name = %s", (name,)).rowcount
            conn.execute("DELETE FROM module_registrations WHERE name = %s", (name,))
        return deleted > 0

    def module_history(self, name: str) -> list[ModuleRegistrationEntry]:
        """The registrations a module sent, oldest first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT name, version, registered_at_ms, registration FROM module_registrations"
                " WHERE name = %s ORDER BY id",
                (name,),
            ).fetchall()
        return [ModuleRegistrationEntry(str(n), str(v), int(at), bytes(r)) for n, v, at, r in rows]

    def close(self) -> None:
        """Nothing to release: the database is the backend's (closing twice is harmless)."""
