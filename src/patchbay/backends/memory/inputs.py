"""Inputs and credentials in memory."""

from __future__ import annotations

import threading

import msgspec

from patchbay.backends.records import Credential, DuplicateName, Input


class MemoryInputStore:
    """Inputs and their credentials in dicts."""

    def __init__(self) -> None:
        self._inputs: dict[str, Input] = {}
        self._credentials: dict[str, Credential] = {}
        self._lock = threading.Lock()

    def add_input(self, item: Input, credential: Credential) -> None:
        """Store an input and its first credential."""
        with self._lock:
            if any(i.name == item.name for i in self._inputs.values()) or item.id in self._inputs:
                raise DuplicateName(item.name)
            if credential.key in self._credentials:
                raise DuplicateName(f"key {credential.key!r} exists")
            self._inputs[item.id] = item
            self._credentials[credential.key] = credential

    def get_input(self, name_or_id: str) -> Input | None:
        """The input with this name or id."""
        with self._lock:
            found = self._inputs.get(name_or_id)
            return found or next((i for i in self._inputs.values() if i.name == name_or_id), None)

    def list_inputs(self) -> list[Input]:
        """Every input, oldest first."""
        with self._lock:
            return sorted(self._inputs.values(), key=lambda i: (i.created_at_ms, i.name))

    def set_input_enabled(self, input_id: str, enabled: bool) -> None:
        """Enable or disable an input."""
        self._update(input_id, enabled=enabled)

    def set_rate_limit(self, input_id: str, rate_limit: float) -> None:
        """Change an input's rate limit."""
        self._update(input_id, rate_limit=rate_limit)

    def set_idsync_key_only(self, input_id: str, on: bool) -> None:
        """Whether IDSync accepts the input's key alone."""
        self._update(input_id, idsync_key_only=on)

    def set_allowed_origins(self, input_id: str, origins: tuple[str, ...]) -> None:
        """The origins browsers may call with the input's key (``()``: any)."""
        self._update(input_id, allowed_origins=tuple(origins))

    def _update(self, input_id: str, **changes: object) -> None:
        with self._lock:
            if (found := self._inputs.get(input_id)) is not None:
                self._inputs[input_id] = msgspec.structs.replace(found, **changes)

    def add_credential(self, credential: Credential) -> None:
        """Add a key to an input."""
        with self._lock:
            if credential.key in self._credentials:
                raise DuplicateName(f"key {credential.key!r} exists")
            self._credentials[credential.key] = credential

    def set_credential_enabled(self, key: str, enabled: bool) -> None:
        """Enable or disable one key."""
        with self._lock:
            if (found := self._credentials.get(key)) is not None:
                self._credentials[key] = msgspec.structs.replace(found, enabled=enabled)

    def credentials(self, input_id: str) -> list[Credential]:
        """The keys of an input, oldest first (in the order added on a tie)."""
        with self._lock:
            found = [c for c in self._credentials.values() if c.input_id == input_id]
        return sorted(found, key=lambda c: c.created_at_ms)

    def find_credential(self, key: str) -> tuple[Credential, Input] | None:
        """The credential with this key and its input."""
        with self._lock:
            credential = self._credentials.get(key)
            found = None if credential is None else self._inputs.get(credential.input_id)
            return None if credential is None or found is None else (credential, found)

    def close(self) -> None:
        """Nothing to release."""
