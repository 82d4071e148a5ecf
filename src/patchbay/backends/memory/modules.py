"""Registered partner modules in memory."""

from __future__ import annotations

import threading

import msgspec

from patchbay.backends.records import ModuleRecord, ModuleRegistrationEntry


class MemoryModuleStore:
    """Modules by name, and the registrations each sent."""

    def __init__(self) -> None:
        self._modules: dict[str, ModuleRecord] = {}
        self._history: dict[str, list[ModuleRegistrationEntry]] = {}
        self._lock = threading.Lock()

    def put_module(self, module: ModuleRecord) -> ModuleRecord:
        """Store ``module`` (keeping the first ``created_at_ms``) and its registration."""
        with self._lock:
            if (old := self._modules.get(module.name)) is not None:
                module = msgspec.structs.replace(module, created_at_ms=old.created_at_ms)
            self._modules[module.name] = module
            self._history.setdefault(module.name, []).append(
                ModuleRegistrationEntry(
                    module.name, module.version, module.updated_at_ms, module.registration
                )
            )
        return module

    def get_module(self, name: str) -> ModuleRecord | None:
        """The module with this name."""
        with self._lock:
            return self._modules.get(name)

    def list_modules(self) -> list[ModuleRecord]:
        """Every module, by name."""
        with self._lock:
            return [self._modules[n] for n in sorted(self._modules)]

    def delete_module(self, name: str) -> bool:
        """Remove a module and its history."""
        with self._lock:
            self._history.pop(name, None)
            return self._modules.pop(name, None) is not None

    def module_history(self, name: str) -> list[ModuleRegistrationEntry]:
        """The registrations a module sent, oldest first."""
        with self._lock:
            return list(self._history.get(name, ()))

    def close(self) -> None:
        """Nothing to release."""
