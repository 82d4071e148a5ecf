"""The audiences compiled for evaluation: what each one reads, in which order they are
evaluated, and which audiences a change to a user can affect.

A :class:`Catalog` is built from the stored audiences and conditions whenever they change
(:func:`compile_catalog`); it is read-only afterwards. Its index by *feature* is what keeps
the work per batch proportional to the audiences that mention what the batch holds: a
feature is one thing a batch can change about a user (a counted condition, a user
attribute, the identities, the consent state, an input, an environment, the membership of
another audience).
"""

from __future__ import annotations

import bisect
import json
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from patchbay.backends.records import AudienceConnection
from patchbay.collect.events import Event, event_type_of
from patchbay.segment.compiled import Test, compile_criteria
from patchbay.segment.criteria import (
    AudienceRef,
    Consent,
    Count,
    EnvironmentSeen,
    EventCondition,
    IdentityCondition,
    InputSeen,
    Node,
    UserAttribute,
    event_conditions,
    walk,
)
from patchbay.segment.evaluate import (
    MISSING,
    Facts,
    event_actions,
    event_name,
    holds,
    prepared,
    prepared_rest,
)

#: One thing a batch can change about a user: ``("cond", ID)``, ``("attr", KEY)``,
#: ``("identity", TYPE)``, ``("consent", "gdpr:PURPOSE" | "ccpa:PURPOSE")``,
#: ``("input", NAME)``, ``("env", NAME)`` or ``("audience", ID)``.
Feature = tuple[str, str]
#: The kinds of features read from the user's profile (the engine keeps what it last saw
#: of each, and evaluates again only what differs).
PROFILE_KINDS = frozenset({"attr", "identity", "consent", "input"})


def condition_key(condition: EventCondition) -> str:
    """The canonical JSON of what a condition counts: equal keys share one tally."""
    match = condition.match
    document = {
        "type": match.type,
        "name": match.name,
        "custom_event_type": match.custom_event_type,
        "action": match.action,
        "attributes": [[c.key, c.op, c.value] for c in match.attributes],
        "within_ms": condition.window_ms,
        "measure": condition.measure,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class CompiledAudience:
    """One audience ready to evaluate."""

    id: int
    name: str
    version: int
    criteria: Node
    #: The ids of the conditions it counts.
    conditions: frozenset[int]
    #: The ids of the audiences it refers to.
    references: frozenset[int]
    #: Whether it holds for a user nothing is known of (evaluated for every new user).
    default: bool
    #: The criteria compiled (:mod:`.compiled`): what evaluation runs.
    test: Test


@dataclass(frozen=True)
class Counted:
    """A condition counted for every user: its id and what it counts. ``rest``: what is
    left to test of an event the catalog's index (event type, name, action) found for it
    (:func:`~patchbay.segment.evaluate.prepared_rest`; ``None``: nothing, it matches)."""

    id: int
    condition: EventCondition
    rest: Callable[[Event], bool] | None = None


@dataclass
class Catalog:
    """The compiled audiences; see the module documentation."""

    audiences: dict[int, CompiledAudience] = field(default_factory=dict)
    by_name: dict[str, int] = field(default_factory=dict)
    #: Audience ids, every audience after those it refers to.
    order: list[int] = field(default_factory=list)
    #: The position of each audience id in :attr:`order`.
    position: dict[int, int] = field(default_factory=dict)
    #: Condition id by the identity (``id()``) of each condition node of the compiled
    #: criteria: conditions that compare equal may still count differently (``true`` and
    #: ``1`` are equal in Python, not in a definition), so nodes are told apart by their
    #: key (:func:`condition_key`), and found at evaluation by identity, fast.
    node_ids: dict[int, int] = field(default_factory=dict)
    #: The window of each condition id.
    windows: dict[int, int | None] = field(default_factory=dict)
    #: The ids of the conditions that sum a measure (the others count: each event is 1).
    summed: frozenset[int] = frozenset()
    #: The counted conditions by the event type, name and action they match (``None``:
    #: any name, any action): see :meth:`candidates`.
    counters: dict[tuple[str, str | None, str | None], list[Counted]] = field(default_factory=dict)
    #: The event types some condition counts; those some condition names; those some
    #: condition asks an action of.
    counted_types: frozenset[str] = frozenset()
    named_types: frozenset[str] = frozenset()
    action_types: frozenset[str] = frozenset()
    #: Every condition node counted by each condition id (they may differ in their bounds):
    #: a change of the tally matters only if one of them changes its answer.
    checks: dict[int, list[EventCondition]] = field(default_factory=dict)
    #: For each counting condition id (not :attr:`summed`), the counts at which an answer of
    #: its :attr:`checks` changes, ascending: ``min`` and ``max + 1`` of each.
    thresholds: dict[int, tuple[int, ...]] = field(default_factory=dict)
    #: For each :attr:`summed` condition id, the tests of the sums of its checks.
    sum_tests: dict[int, tuple[Callable[[object], bool], ...]] = field(default_factory=dict)
    #: The features read from profiles that some audience (or, for attributes, some
    #: connection's ``attributes``) reads.
    profile_features: frozenset[Feature] = frozenset()
    #: :attr:`profile_features` with the key of each in a user's facts (``"KIND:NAME"``).
    profile_reads: tuple[tuple[str, str, str], ...] = ()
    #: A checksum of the keys of :attr:`profile_reads` (never 0): a user's facts taken for
    #: the same reads answer every criterion of this catalog (``SegmentUser.facts_for``).
    reads_checksum: int = 1
    #: The audiences each feature can affect.
    by_feature: dict[Feature, set[int]] = field(default_factory=dict)
    #: The audiences that hold for a user nothing is known of.
    defaults: frozenset[int] = frozenset()
    #: The connections of each audience.
    connections: dict[int, list[AudienceConnection]] = field(default_factory=dict)

    def affected(self, features: Iterable[Feature]) -> set[int]:
        """The audiences any of ``features`` can affect."""
        found: set[int] = set()
        for feature in features:
            found |= self.by_feature.get(feature, set())
        return found

    def candidates(self, event: Event) -> list[Counted]:
        """The counted conditions whose type, name and action ``event`` has (each once):
        those without a :attr:`Counted.rest` match it, the others if it passes."""
        event_type = event_type_of(event)
        if event_type not in self.counted_types:
            return []
        names: tuple[str | None, ...] = (None,)
        if event_type in self.named_types:
            name = event_name(event)
            if name is not None:
                names = (None, name)
        actions: Iterable[str | None] = (None,)
        if event_type in self.action_types:
            actions = dict.fromkeys((None, *event_actions(event)))
        found: list[Counted] = []
        counters = self.counters
        for name in names:
            for action in actions:
                counted = counters.get((event_type, name, action))
                if counted:
                    found.extend(counted)
        return found

    def answers_change(
        self, condition_id: int, before: tuple[int, float], after: tuple[int, float]
    ) -> bool:
        """Whether the count and sum of a condition going from ``before`` to ``after`` may
        change the answer of one of its checks (never ``False`` when one does)."""
        thresholds = self.thresholds.get(condition_id)
        if thresholds is not None:  # some threshold lies between the two counts
            return bisect.bisect_right(thresholds, before[0]) != bisect.bisect_right(
                thresholds, after[0]
            )
        return any(
            test(before[1]) != test(after[1]) for test in self.sum_tests.get(condition_id, ())
        )

    def condition_id(self, condition: EventCondition) -> int:
        """The id of a condition node of the compiled criteria."""
        return self.node_ids[id(condition)]

    def dependents(self, audience_id: int) -> set[int]:
        """The audiences that refer to ``audience_id``."""
        return self.by_feature.get(("audience", str(audience_id)), set())


def features_of(node: Node, condition_ids: Mapping[str, int]) -> set[Feature]:
    """What ``node`` reads, as features (``condition_ids``: by :func:`condition_key`;
    audience references are left out)."""
    found: set[Feature] = set()
    for n in walk(node):
        match n:
            case EventCondition():
                found.add(("cond", str(condition_ids[condition_key(n)])))
            case UserAttribute(compare=c):
                found.add(("attr", c.key))
            case IdentityCondition(compare=c):
                found.add(("identity", c.key))
            case Consent(regulation=regulation, purpose=purpose):
                found.add(("consent", f"{regulation}:{purpose}"))
            case InputSeen(name):
                found.add(("input", name))
            case EnvironmentSeen(environment):
                found.add(("env", environment))
    return found


class _Nothing(Facts):
    """A user nothing is known of (for :attr:`CompiledAudience.default`)."""

    def __init__(self, defaults: Mapping[str, bool]) -> None:
        self._defaults = defaults

    def events(self, condition: EventCondition) -> tuple[int, float]:
        return 0, 0.0

    def attribute(self, key: str) -> object:
        return MISSING

    def identities(self, identity_type: str) -> list[str]:
        return []

    def consent(self, regulation: str, purpose: str) -> bool | None:
        return None

    def seen_input(self, name: str) -> bool:
        return False

    def seen_environment(self, environment: str) -> bool:
        return False

    def member(self, audience: str) -> bool:
        return self._defaults.get(audience, False)


@dataclass(frozen=True)
class AudienceSource:
    """An audience to compile: its record's id, name and version, and parsed criteria."""

    id: int
    name: str
    version: int
    criteria: Node


def compile_catalog(
    sources: Iterable[AudienceSource],
    order: list[str],
    condition_ids: Mapping[str, int],
    connections: Iterable[AudienceConnection] = (),
) -> Catalog:
    """Compile ``sources`` (``order``: their names, each after those it refers to;
    ``condition_ids``: the id of every condition key they use)."""
    catalog = Catalog()
    by_name = {s.name: s for s in sources}
    defaults: dict[str, bool] = {}
    nothing = _Nothing(defaults)
    counters: list[Counted] = []
    for name in order:
        source = by_name[name]
        for node in walk(source.criteria):
            if isinstance(node, EventCondition):
                condition_id = condition_ids[condition_key(node)]
                catalog.node_ids[id(node)] = condition_id
                checks = catalog.checks.setdefault(condition_id, [])
                if all((c.count, c.sum) != (node.count, node.sum) for c in checks):
                    checks.append(node)  # one of each bound is enough
                if condition_id not in catalog.windows:
                    catalog.windows[condition_id] = node.window_ms
                    counters.append(Counted(condition_id, node, prepared_rest(node.match)))
        features = features_of(source.criteria, condition_ids)
        references = {
            by_name[n.name].id
            for n in walk(source.criteria)
            if isinstance(n, AudienceRef) and n.name in by_name
        }
        for ref in references:
            features.add(("audience", str(ref)))
        defaults[name] = holds(source.criteria, nothing)
        catalog.by_name[name] = source.id
        catalog.position[source.id] = len(catalog.order)
        catalog.audiences[source.id] = CompiledAudience(
            id=source.id,
            name=name,
            version=source.version,
            criteria=source.criteria,
            conditions=frozenset(
                condition_ids[condition_key(c)] for c in event_conditions(source.criteria)
            ),
            references=frozenset(references),
            default=defaults[name],
            # (every audience it refers to is compiled before it: ``order``)
            test=compile_criteria(source.criteria, catalog.condition_id, catalog.by_name),
        )
        catalog.order.append(source.id)
        for feature in features:
            catalog.by_feature.setdefault(feature, set()).add(source.id)
    for counter in counters:
        match = counter.condition.match
        catalog.counters.setdefault((match.type, match.name, match.action), []).append(counter)
    matches = [c.condition.match for c in counters]
    catalog.counted_types = frozenset(m.type for m in matches)
    catalog.named_types = frozenset(m.type for m in matches if m.name is not None)
    catalog.action_types = frozenset(m.type for m in matches if m.action is not None)
    catalog.summed = frozenset(c.id for c in counters if c.condition.sum is not None)
    for condition_id, checks in catalog.checks.items():
        if condition_id in catalog.summed:
            catalog.sum_tests[condition_id] = tuple(
                prepared(c.sum.op, c.sum.value) for c in checks if c.sum is not None
            )
        else:
            bounds = [c.count or Count() for c in checks]
            ends = {b.min for b in bounds} | {b.max + 1 for b in bounds if b.max is not None}
            catalog.thresholds[condition_id] = tuple(sorted(ends))
    catalog.defaults = frozenset(a for a, c in catalog.audiences.items() if c.default)
    profile = {f for f in catalog.by_feature if f[0] in PROFILE_KINDS}
    for connection in connections:
        if connection.audience_id in catalog.audiences:
            catalog.connections.setdefault(connection.audience_id, []).append(connection)
            profile.update(("attr", key) for key in connection.attributes)
    catalog.profile_features = frozenset(profile)
    catalog.profile_reads = tuple((kind, name, f"{kind}:{name}") for kind, name in sorted(profile))
    keys = "\n".join(key for _, _, key in catalog.profile_reads)
    catalog.reads_checksum = zlib.crc32(keys.encode()) + 1
    return catalog
