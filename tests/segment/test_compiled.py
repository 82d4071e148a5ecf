"""Compiled criteria mean what :func:`holds` means, for every kind of node and tally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.records import Tally
from patchbay.segment import tallies
from patchbay.segment.catalog import condition_key
from patchbay.segment.compiled import compile_criteria
from patchbay.segment.criteria import AudienceRef, EventCondition, Node, walk
from patchbay.segment.evaluate import MISSING, holds
from tests.segment import strategies as s

NOW_MS = 1_800_000_000_000
TREES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class User:
    """One user's facts, read both ways: as :class:`~patchbay.segment.evaluate.Facts` (for
    :func:`holds`, by condition node) and as compiled criteria's ``Known`` (by id)."""

    ids: dict[str, int]
    tallies: dict[int, Tally]
    attributes: dict[str, object]
    identities_by_type: dict[str, list[str]]
    consents: dict[tuple[str, str], bool]
    inputs: frozenset[str]
    environments: frozenset[str]
    member_names: frozenset[str]
    audience_ids: Mapping[str, int] = field(default_factory=dict)
    now_ms: int = NOW_MS

    @property
    def members(self) -> set[int]:
        return {self.audience_ids[n] for n in self.member_names}

    def events(self, condition: EventCondition) -> tuple[int, float]:
        tally = self.tallies.get(self.ids[condition_key(condition)])
        return tallies.stats(tally, condition.window_ms, self.now_ms)

    def attribute(self, key: str) -> object:
        return self.attributes.get(key, MISSING)

    def identities(self, identity_type: str) -> Sequence[str]:
        return self.identities_by_type.get(identity_type, [])

    def consent(self, regulation: str, purpose: str) -> bool | None:
        return self.consents.get((regulation, purpose))

    def seen_input(self, name: str) -> bool:
        return name in self.inputs

    def seen_environment(self, environment: str) -> bool:
        return environment in self.environments

    def member(self, audience: str) -> bool:
        return audience in self.member_names


def _tally(window_ms: int | None) -> st.SearchStrategy[Tally]:
    values = st.sampled_from([1.0, 2.5, 0.0, -3.0, 100.0])
    if window_ms is None:
        return st.builds(Tally, st.integers(0, 5), values)
    ages = st.integers(0, 2 * window_ms)  # inside the window or already out of it
    events = st.lists(st.tuples(ages.map(lambda a: NOW_MS - a), values), max_size=5)
    return events.map(lambda e: Tally(events=sorted(e)))


@st.composite
def users(draw: st.DrawFn, node: Node) -> User:
    conditions = {condition_key(n): n for n in walk(node) if isinstance(n, EventCondition)}
    ids = {key: i for i, key in enumerate(sorted(conditions), start=1)}
    user_tallies = {
        ids[key]: draw(_tally(condition.window_ms))
        for key, condition in conditions.items()
        if draw(st.booleans())
    }
    scalars = st.one_of(
        st.sampled_from(s.TEXT_POOL), st.sampled_from(s.NUMBER_POOL), st.sampled_from(s.DATE_POOL)
    )
    values = st.one_of(scalars, st.lists(scalars, max_size=3), st.none(), st.booleans())
    return User(
        ids=ids,
        tallies=user_tallies,
        attributes=draw(st.dictionaries(st.sampled_from(s.ATTRIBUTE_KEY_POOL), values)),
        identities_by_type=draw(
            st.dictionaries(
                st.sampled_from(s.IDENTITY_TYPE_POOL),
                st.lists(st.sampled_from(s.IDENTITY_VALUE_POOL), min_size=1, max_size=2),
            )
        ),
        consents=draw(
            st.dictionaries(
                st.sampled_from(
                    [("gdpr", p) for p in s.GDPR_PURPOSE_POOL] + [("ccpa", "data_sale_opt_out")]
                ),
                st.booleans(),
            )
        ),
        inputs=frozenset(draw(st.sets(st.sampled_from(s.INPUT_POOL)))),
        environments=frozenset(draw(st.sets(st.sampled_from(("production", "development"))))),
        member_names=frozenset(draw(st.sets(st.sampled_from(s.AUDIENCE_NAME_POOL)))),
        audience_ids={name: i for i, name in enumerate(s.AUDIENCE_NAME_POOL, start=1)},
    )


@TREES
@given(st.data(), s.criteria())
def test_compiled_criteria_hold_exactly_when_holds_says(data: st.DataObject, node: Node) -> None:
    user = data.draw(users(node))

    def condition_id(condition: EventCondition) -> int:
        return user.ids[condition_key(condition)]

    test = compile_criteria(node, condition_id, user.audience_ids)
    assert test(user) == holds(node, user)


def test_a_reference_to_an_audience_not_compiled_never_holds() -> None:
    user = User({}, {}, {}, {}, {}, frozenset(), frozenset(), frozenset({"a"}))
    test = compile_criteria(AudienceRef("gone"), lambda c: 0, {})
    assert test(user) is False and holds(AudienceRef("gone"), user) is False
