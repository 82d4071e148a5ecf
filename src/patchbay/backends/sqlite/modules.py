"""The embedded backend of the module store: the ``modules`` table in ``patchbay.db``.

One row per registered partner module, with the parts of its registration that the platform
reads often in their own columns (JSON text for lists and objects), the raw registration
response, and the target including the partner's token (``transport`` and the target's
fields in columns of their own, mapped by :func:`_target_columns` and :func:`_target`). The
token is stored encrypted (:mod:`patchbay.secretbox`); a plain-text token an earlier
version stored is encrypted when the store opens.
Every registration received is also appended to ``module_registrations`` (history). Tables
are created if missing; the database is shared with the log
(:mod:`patchbay.backends.sqlite.db`).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from patchbay.backends.records import ModuleRecord, ModuleRegistrationEntry
from patchbay.backends.sqlite.db import SqliteDatabase
from patchbay.backends.sqlite.sealed import open_text, seal_plain_columns
from patchbay.partner.targets import Target
from patchbay.secretbox import SecretBox

_SCHEMA = """
CREATE TABLE IF NOT EXISTS modules (
    name TEXT PRIMARY KEY,
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
    audience INTEGER NOT NULL,
    dsr INTEGER NOT NULL,
    supported_dsr_types TEXT NOT NULL,
    registration BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS module_registrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    registration BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS module_registrations_name ON module_registrations (name, id);
"""

#: Columns in table order; the JSON ones are encoded with msgspec (as text).
COLUMNS = (
    "name",
    "display_name",
    "version",
    "description",
    "sdk_version",
    "transport",
    "url",
    "token",
    "lambda_function",
    "lambda_region",
    "lambda_endpoint_url",
    "permissions",
    "account_settings",
    "connection_settings",
    "audience_subscription_settings",
    "supported_event_types",
    "supported_runtime_environments",
    "supported_system_notification_types",
    "audience",
    "dsr",
    "supported_dsr_types",
    "registration",
    "created_at_ms",
    "updated_at_ms",
)
_JSON_COLUMNS = frozenset(
    {
        "permissions",
        "account_settings",
        "connection_settings",
        "audience_subscription_settings",
        "supported_event_types",
        "supported_runtime_environments",
        "supported_system_notification_types",
        "supported_dsr_types",
    }
)
_BOOL_COLUMNS = frozenset({"audience", "dsr"})
#: The columns that hold the target (``transport`` is its tag), by the target's field name.
_TARGET_COLUMNS = {
    "url": "url",
    "token": "token",
    "function": "lambda_function",
    "region": "lambda_region",
    "endpoint_url": "lambda_endpoint_url",
}
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM modules"


class SqliteModuleStore:
    """Registered partner modules in the ``modules`` table of ``patchbay.db``."""

    def __init__(self, db: SqliteDatabase, box: SecretBox) -> None:
        self._db = db
        self._box = box
        db.create(_SCHEMA)
        seal_plain_columns(db, box, "modules", ("name",), "token")

    def put_module(self, module: ModuleRecord) -> ModuleRecord:
        """Insert or replace ``module`` (keeping the first ``created_at_ms``) and append its
        registration to the history, in one transaction."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT created_at_ms FROM modules WHERE name = ?", (module.name,)
            ).fetchone()
            if row is not None:
                module = msgspec.structs.replace(module, created_at_ms=int(row[0]))
            placeholders = ", ".join("?" for _ in COLUMNS)
            conn.execute(
                f"INSERT OR REPLACE INTO modules ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                module_row(module, self._box),
            )
            conn.execute(
                "INSERT INTO module_registrations (name, version, registered_at_ms,"
                " registration) VALUES (?, ?, ?, ?)",
                (module.name, module.version, module.updated_at_ms, module.registration),
            )
        return module

    def get_module(self, name: str) -> ModuleRecord | None:
        """The module with this name."""
        row = self._db.conn().execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
        return module_from_row(row, self._box) if row else None

    def list_modules(self) -> list[ModuleRecord]:
        """Every module, by name."""
        rows = self._db.conn().execute(f"{_SELECT} ORDER BY name")
        return [module_from_row(r, self._box) for r in rows]

    def delete_module(self, name: str) -> bool:
        """Remove a module and its history."""
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM modules WHERE name = ?", (name,)).rowcount
            conn.execute("DELETE FROM module_registrations WHERE name = ?", (name,))
        return deleted > 0

    def module_history(self, name: str) -> list[ModuleRegistrationEntry]:
        """The registrations a module sent, oldest first."""
        rows = self._db.conn().execute(
            "SELECT name, version, registered_at_ms, registration FROM module_registrations"
            " WHERE name = ? ORDER BY id",
            (name,),
        )
        return [
            ModuleRegistrationEntry(
                name=str(r[0]),
                version=str(r[1]),
                registered_at_ms=int(r[2]),
                registration=bytes(r[3]),
            )
            for r in rows
        ]

    def close(self) -> None:
        """Close every connection this store opened."""
        self._db.close()


def _target_columns(target: Target) -> dict[str, object]:
    """The ``transport`` column and the target columns of ``target`` (``None`` where it has
    no such field)."""
    fields = msgspec.structs.asdict(target)
    columns: dict[str, object] = {"transport": target.transport}
    columns.update({column: fields.get(name) for name, column in _TARGET_COLUMNS.items()})
    return columns


def _target(columns: dict[str, object]) -> Target:
    """The target the ``transport`` and target columns hold (a missing region: the default)."""
    fields = {"transport": columns.pop("transport")}
    for name, column in _TARGET_COLUMNS.items():
        value = columns.pop(column)
        if value is not None:
            fields[name] = value
    target: Target = msgspec.convert(fields, Target)
    return target


def module_row(module: ModuleRecord, box: SecretBox) -> tuple[object, ...]:
    """The values of :data:`COLUMNS` for ``module``, its token sealed (the PostgreSQL
    store's too: JSON as text, flags as booleans, the registration as bytes)."""
    target = _target_columns(module.target)
    if isinstance(target["token"], str):
        target["token"] = box.seal(target["token"])
    values: list[object] = []
    for column in COLUMNS:
        if column in target:
            values.append(target[column])
            continue
        value = getattr(module, column)
        if column in _JSON_COLUMNS:
            value = msgspec.json.encode(value).decode()
        elif column in _BOOL_COLUMNS:
            value = bool(value)
        values.append(value)
    return tuple(values)


def module_from_row(row: Sequence[object], box: SecretBox) -> ModuleRecord:
    """The module a row of :data:`COLUMNS` holds, its token opened."""
    fields: dict[str, object] = {}
    for column, value in zip(COLUMNS, row, strict=True):
        if column == "token":
            fields[column] = None if value is None else open_text(box, value)
        elif column in _JSON_COLUMNS:
            assert isinstance(value, str)
            fields[column] = msgspec.json.decode(value)
        elif column in _BOOL_COLUMNS:
            fields[column] = bool(value)
        elif column == "registration":
            assert isinstance(value, bytes | memoryview)
            fields[column] = bytes(value)
        else:
            fields[column] = value
    fields["target"] = _target(fields)
    return msgspec.convert(fields, ModuleRecord)
