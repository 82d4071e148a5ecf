"""The identity strategy: the operator's rules for turning identities into one user.

Defaults follow mParticle's default strategy: ``customer_id`` and ``email`` are unique (one
user per value), the user's own identities outrank device ids, and a login folds the
anonymous profile into the known one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import msgspec

from patchbay.collect.batch import USER_IDENTITY_TYPES
from patchbay.resolve.identities import ALL_IDENTITY_TYPES, DEVICE_IDENTITY_TYPES, canonical_type

#: Values that never identify anyone (compared case-insensitively, after trimming).
DEFAULT_BLOCKED_VALUES: tuple[str, ...] = (
    "",
    "null",
    "undefined",
    "0",
    "unknown",
    "n/a",
    "na",
    "none",
    "nil",
    "-1",
    "00000000-0000-0000-0000-000000000000",
)

LoginBehaviour = Literal["merge", "separate"]


class IdentityStrategy(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How identities resolve to users.

    - ``unique``: identity types that belong to at most one user. A value already linked to
      another user is not moved (the first owner keeps it).
    - ``priority``: the order in which identities are tried; the first that matches a user
      decides, so it also settles conflicts between identities pointing at different users.
    - ``login``: when a batch with a known user's identities arrives from a device whose
      anonymous profile is known, ``merge`` folds the anonymous profile into the known one,
      ``separate`` keeps both.
    - ``blocked_values``: values that never match (``""``, ``null``, ``0``...).
    - ``max_users_per_identity``: a non-unique value (a shared device id) linked to more users
      than this is no longer used for matching.
    """

    unique: tuple[str, ...] = ("customer_id", "email")
    priority: tuple[str, ...] = (*USER_IDENTITY_TYPES, *DEVICE_IDENTITY_TYPES)
    login: LoginBehaviour = "merge"
    blocked_values: tuple[str, ...] = DEFAULT_BLOCKED_VALUES
    max_users_per_identity: int = 10

    def __post_init__(self) -> None:
        for name in (*self.unique, *self.priority):
            if name not in ALL_IDENTITY_TYPES:
                raise ValueError(f"unknown identity type {name!r}")
        if self.max_users_per_identity < 1:
            raise ValueError("max_users_per_identity must be at least 1")

    def is_blocked(self, value: str) -> bool:
        """Whether ``value`` is one that never identifies anyone."""
        return value.strip().lower() in _folded(self.blocked_values)

    def rank(self, identity_type: str) -> int:
        """The position of ``identity_type`` in the priority order (unlisted types last)."""
        try:
            return self.priority.index(identity_type)
        except ValueError:
            return len(self.priority)


@functools.cache
def _folded(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values)


def load_strategy(path: Path) -> IdentityStrategy:
    """Read a strategy from a JSON file; identity names may use any known spelling."""
    raw = msgspec.json.decode(path.read_bytes())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for key in ("unique", "priority"):
        if key in raw and isinstance(raw[key], list):
            raw[key] = [canonical_type(str(v)) or str(v) for v in raw[key]]
    return msgspec.convert(raw, IdentityStrategy)
