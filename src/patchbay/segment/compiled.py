"""Criteria compiled to closures: what the engine runs for every user evaluation.

:func:`~patchbay.segment.evaluate.holds` walks a criteria tree and dispatches on each
node's type every time; the engine evaluates a few audiences per batch, so it runs a
closure per node made once, when the audiences are loaded (:func:`compile_criteria`),
with each node's constants (condition id, window, bounds, operator, the id of a referred
audience) bound in. The closures mean exactly what :func:`holds` means: the property
tests check the engine, which runs these, against a from-scratch evaluation with
:func:`holds`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from patchbay.backends.records import Tally
from patchbay.segment import tallies
from patchbay.segment.criteria import (
    All,
    AnyOf,
    AudienceRef,
    Consent,
    EnvironmentSeen,
    EventCondition,
    IdentityCondition,
    InputSeen,
    Node,
    Not,
    UserAttribute,
)
from patchbay.segment.evaluate import MISSING, prepared


class Known(Protocol):
    """What compiled criteria read of one user at one moment."""

    @property
    def tallies(self) -> Mapping[int, Tally]:
        """The user's tallies by condition id."""

    @property
    def now_ms(self) -> int:
        """The moment of the evaluation."""

    @property
    def attributes(self) -> Mapping[str, object]:
        """The user attributes of its profile."""

    @property
    def members(self) -> Collection[int]:
        """The ids of the audiences it belongs to (those evaluated before as they are now)."""

    def identities(self, identity_type: str) -> Sequence[str]: ...

    def consent(self, regulation: str, purpose: str) -> bool | None: ...

    def seen_input(self, name: str) -> bool: ...

    def seen_environment(self, environment: str) -> bool: ...


#: A compiled criteria node: whether it holds for a user.
Test = Callable[[Known], bool]


def _never(known: Known) -> bool:
    return False


def compile_criteria(
    node: Node, condition_id: Callable[[EventCondition], int], audience_ids: Mapping[str, int]
) -> Test:
    """``node`` as a :data:`Test` (``condition_id``: the id of each condition node's tally;
    ``audience_ids``: the id of each audience by name; a reference to an audience missing
    from it never holds, as for :func:`~patchbay.segment.evaluate.holds`)."""

    def build(node: Node) -> Test:
        match node:
            case All(nodes):
                return _all(tuple(build(n) for n in nodes))
            case AnyOf(nodes):
                return _any(tuple(build(n) for n in nodes))
            case Not(child):
                inner = build(child)
                return lambda known: not inner(known)
            case EventCondition():
                return _event(node, condition_id(node))
            case UserAttribute(compare=c):
                key, attribute = c.key, prepared(c.op, c.value)
                return lambda known: attribute(known.attributes.get(key, MISSING))
            case IdentityCondition(compare=c):
                kind, identity_ = c.key, prepared(c.op, c.value)

                def identity(known: Known) -> bool:
                    values = known.identities(kind)
                    return identity_(list(values) if values else MISSING)

                return identity
            case AudienceRef(name):
                audience_id = audience_ids.get(name)
                if audience_id is None:
                    return _never
                return lambda known: audience_id in known.members
            case Consent(regulation=regulation, purpose=purpose, consented=consented):
                return lambda known: known.consent(regulation, purpose) is consented
            case InputSeen(name):
                return lambda known: known.seen_input(name)
            case EnvironmentSeen(environment):
                return lambda known: known.seen_environment(environment)
        raise TypeError(f"not a criteria node: {node!r}")  # pragma: no cover

    return build(node)


# (loops, not all() and any() over a generator: one generator less per evaluation)


def _all(tests: tuple[Test, ...]) -> Test:
    def every(known: Known) -> bool:
        for test in tests:  # noqa: SIM110
            if not test(known):
                return False
        return True

    return every


def _any(tests: tuple[Test, ...]) -> Test:
    def some(known: Known) -> bool:
        for test in tests:  # noqa: SIM110
            if test(known):
                return True
        return False

    return some


def _event(condition: EventCondition, condition_id: int) -> Test:
    window = condition.window_ms
    stats = tallies.stats
    if condition.sum is not None:
        test = prepared(condition.sum.op, condition.sum.value)

        def summed(known: Known) -> bool:
            _, total = stats(known.tallies.get(condition_id), window, known.now_ms)
            return test(total)

        return summed
    low = condition.count.min if condition.count is not None else 1
    high = condition.count.max if condition.count is not None else None

    def counted(known: Known) -> bool:
        count, _ = stats(known.tallies.get(condition_id), window, known.now_ms, False)
        return count >= low and (high is None or count <= high)

    return counted
