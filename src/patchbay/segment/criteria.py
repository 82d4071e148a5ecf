"""The types of an audience definition: a tree of criteria, as :mod:`.parse` returns it.

Every node is a frozen, hashable dataclass, so that equal criteria compare and hash equal
(the engine shares the counting of equal event conditions between audiences).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

#: The comparison operators of attribute, identity and sum conditions.
Op = Literal[
    "eq", "ne", "contains", "starts_with", "in", "gt", "gte", "lt", "lte", "exists", "not_exists"
]
OPS: tuple[Op, ...] = (
    "eq",
    "ne",
    "contains",
    "starts_with",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "not_exists",
)
#: The operators a sum is compared with.
SUM_OPS: tuple[Op, ...] = ("eq", "ne", "gt", "gte", "lt", "lte")

#: A value compared with: a string, a number, a boolean, or (for ``in``) a tuple of these.
Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True, slots=True)
class Compare:
    """``{"attribute" | "user_attribute" | "identity": KEY, "op": OP, "value": V}``:
    ``value`` is ``None`` for ``exists`` and ``not_exists``, a tuple for ``in``."""

    key: str
    op: Op
    value: Value = None


@dataclass(frozen=True, slots=True)
class EventMatch:
    """Which events count: ``type`` is an ``event_type`` of the batch format; ``name`` the
    custom event name or screen name; ``action`` the commerce product or promotion action;
    ``attributes`` conditions on the event's custom attributes (all must hold)."""

    type: str
    name: str | None = None
    custom_event_type: str | None = None
    action: str | None = None
    attributes: tuple[Compare, ...] = ()


@dataclass(frozen=True, slots=True)
class Count:
    """How many matching events: at least ``min``, at most ``max`` (``None``: no bound)."""

    min: int = 1
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Sum:
    """The sum of ``of`` over the matching events, compared with ``op`` and ``value``.
    ``of`` is ``"revenue"`` (commerce totals) or ``"attribute:NAME"`` (a numeric custom
    attribute; events where it is not a number add nothing)."""

    of: str
    op: Op
    value: float


@dataclass(frozen=True, slots=True)
class EventCondition:
    """``{"event": MATCH, "count" | "sum": ..., "within": DURATION}``: ``window_ms`` is
    ``None`` for all time. Exactly one of ``count`` and ``sum`` is set."""

    match: EventMatch
    window_ms: int | None = None
    count: Count | None = None
    sum: Sum | None = None

    @property
    def measure(self) -> str | None:
        """What each matching event adds: ``None`` to count, else :attr:`Sum.of`."""
        return self.sum.of if self.sum is not None else None


@dataclass(frozen=True, slots=True)
class UserAttribute:
    """``{"user_attribute": KEY, "op": OP, "value": V}``."""

    compare: Compare


@dataclass(frozen=True, slots=True)
class IdentityCondition:
    """``{"identity": TYPE, "op": OP, "value": V}`` over the user's user and device
    identities (``compare.key`` is the canonical identity type)."""

    compare: Compare


@dataclass(frozen=True, slots=True)
class AudienceRef:
    """``{"audience": NAME}``: the user is a member of that audience."""

    name: str


@dataclass(frozen=True, slots=True)
class Consent:
    """``{"consent": {"gdpr": PURPOSE, "consented": B}}`` (``regulation`` ``gdpr``, purpose
    lower-cased) or ``{"consent": {"ccpa": B}}`` (``regulation`` ``ccpa``, the
    ``data_sale_opt_out`` purpose): the user's latest decision for it is ``consented``."""

    regulation: Literal["gdpr", "ccpa"]
    purpose: str
    consented: bool


@dataclass(frozen=True, slots=True)
class InputSeen:
    """``{"input": NAME}``: the user was seen on that input (by name)."""

    name: str


@dataclass(frozen=True, slots=True)
class EnvironmentSeen:
    """``{"environment": "production" | "development"}``: the user was seen in it."""

    environment: str


@dataclass(frozen=True, slots=True)
class All:
    """``{"all": [...]}``: every node holds (true when empty)."""

    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """``{"any": [...]}``: at least one node holds (false when empty)."""

    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``{"not": NODE}``."""

    node: Node


Node: TypeAlias = (
    All
    | AnyOf
    | Not
    | EventCondition
    | UserAttribute
    | IdentityCondition
    | AudienceRef
    | Consent
    | InputSeen
    | EnvironmentSeen
)


@dataclass(frozen=True, slots=True)
class Definition:
    """An audience definition: its name, description and criteria."""

    name: str
    description: str
    criteria: Node


def walk(node: Node) -> list[Node]:
    """``node`` and every node below it, depth first."""
    found: list[Node] = [node]
    match node:
        case All(nodes) | AnyOf(nodes):
            for child in nodes:
                found.extend(walk(child))
        case Not(child):
            found.extend(walk(child))
    return found


def references(node: Node) -> set[str]:
    """The names of the audiences ``node`` refers to."""
    return {n.name for n in walk(node) if isinstance(n, AudienceRef)}


def event_conditions(node: Node) -> list[EventCondition]:
    """The event conditions in ``node``, depth first. Repeats are kept: conditions equal in
    Python may differ in a definition (``true`` and ``1``), so callers that share equal
    conditions compare their keys (:func:`patchbay.segment.catalog.condition_key`)."""
    return [n for n in walk(node) if isinstance(n, EventCondition)]
