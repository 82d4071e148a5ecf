"""API clients in memory."""

from __future__ import annotations

import threading

import msgspec

from patchbay.backends.records import ApiClient, DuplicateName


class MemoryApiClientStore:
    """API clients in a dict by id."""

    def __init__(self) -> None:
        self._clients: dict[str, ApiClient] = {}
        self._lock = threading.Lock()

    def add_client(self, client: ApiClient) -> None:
        """Store a new client."""
        with self._lock:
            taken = any(c.name == client.name for c in self._clients.values())
            if taken or client.id in self._clients:
                raise DuplicateName(client.name)
            self._clients[client.id] = client

    def get_client(self, name_or_id: str) -> ApiClient | None:
        """The client with this name or id."""
        with self._lock:
            found = self._clients.get(name_or_id)
            return found or next((c for c in self._clients.values() if c.name == name_or_id), None)

    def list_clients(self) -> list[ApiClient]:
        """Every client, oldest first."""
        with self._lock:
            return sorted(self._clients.values(), key=lambda c: (c.created_at_ms, c.name))

    def set_client_enabled(self, client_id: str, enabled: bool) -> None:
        """Enable or disable a client."""
        self._update(client_id, enabled=enabled)

    def set_client_secret(self, client_id: str, secret_hash: str, at_ms: int) -> None:
        """Replace a client's secret."""
        self._update(client_id, secret_hash=secret_hash, secret_set_at_ms=at_ms)

    def _update(self, client_id: str, **changes: object) -> None:
        with self._lock:
            if (found := self._clients.get(client_id)) is not None:
                self._clients[client_id] = msgspec.structs.replace(found, **changes)

    def remove_client(self, client_id: str) -> bool:
        """Forget a client."""
        with self._lock:
            return self._clients.pop(client_id, None) is not None

    def close(self) -> None:
        """Nothing to release."""
