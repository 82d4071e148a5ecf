"""Web SDK kits, their connections and forwarding totals in memory."""

from __future__ import annotations

import threading

import msgspec

from patchbay.backends.records import KitConnection, KitForwarded, KitRecord

_Where = tuple[str, str, bool]


class MemoryKitStore:
    """Kits by key, connections by (kit, input, development), totals by kit name."""

    def __init__(self) -> None:
        self._kits: dict[str, KitRecord] = {}
        self._connections: dict[_Where, KitConnection] = {}
        self._forwarded: dict[str, KitForwarded] = {}
        self._version = 0
        self._lock = threading.Lock()

    def put_kit(self, kit: KitRecord) -> bool:
        """Store ``kit`` (keeping the first ``created_at_ms``); whether it replaced one."""
        with self._lock:
            old = self._kits.get(kit.key)
            if old is not None:
                kit = msgspec.structs.replace(kit, created_at_ms=old.created_at_ms)
            self._kits[kit.key] = kit
            self._version += 1
            return old is not None

    def get_kit(self, key: str) -> KitRecord | None:
        """The kit with this key."""
        with self._lock:
            return self._kits.get(key)

    def list_kits(self) -> list[KitRecord]:
        """Every kit, by key."""
        with self._lock:
            return [self._kits[k] for k in sorted(self._kits)]

    def delete_kit(self, key: str) -> bool:
        """Remove a kit that has no connections."""
        with self._lock:
            if key not in self._kits or any(w[0] == key for w in self._connections):
                return False
            del self._kits[key]
            self._version += 1
            return True

    def put_kit_connection(self, connection: KitConnection) -> bool:
        """Create or replace a connection (keeping its creation time and subscription id)."""
        where = (connection.kit, connection.input_id, connection.development)
        with self._lock:
            old = self._connections.get(where)
            if old is not None:
                connection = msgspec.structs.replace(
                    connection,
                    created_at_ms=old.created_at_ms,
                    event_subscription_id=old.event_subscription_id,
                )
            self._connections[where] = connection
            self._version += 1
            return old is not None

    def list_kit_connections(self) -> list[KitConnection]:
        """Every connection, by kit, input, then production before development."""
        with self._lock:
            return [self._connections[w] for w in sorted(self._connections)]

    def remove_kit_connection(self, kit: str, input_id: str, development: bool) -> bool:
        """Remove one connection."""
        with self._lock:
            removed = self._connections.pop((kit, input_id, development), None) is not None
            self._version += removed
            return removed

    def add_forwarded(self, counts: dict[str, int], at_ms: int) -> None:
        """Add to the totals."""
        with self._lock:
            for kit, events in counts.items():
                old = self._forwarded.get(kit)
                total = events + (old.events if old else 0)
                last = max(at_ms, old.last_seen_ms) if old else at_ms
                self._forwarded[kit] = KitForwarded(kit, total, last)

    def forwarded(self) -> list[KitForwarded]:
        """The totals, by kit name."""
        with self._lock:
            return [self._forwarded[k] for k in sorted(self._forwarded)]

    def version(self) -> int:
        """Changes with every change of kits or connections."""
        with self._lock:
            return self._version

    def close(self) -> None:
        """Nothing to release."""
