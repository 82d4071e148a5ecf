"""The contract of :class:`~patchbay.backends.abstract.AudienceStore`, on every backend."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.abstract import AudienceStore, Backend
from patchbay.backends.memory.audiences import MemoryAudienceStore
from patchbay.backends.records import (
    MAX_AUDIENCE_ID,
    AudienceAction,
    AudienceBuild,
    AudienceConnection,
    AudienceRecord,
    CheckpointMoved,
    ConditionRecord,
    DuplicateName,
    LogPosition,
    NewPendingChange,
    PendingChange,
    SegmentChanges,
    SegmentUser,
    Tally,
)
from patchbay.backends.sqlite import SEGMENT_FILE, open_sqlite
from patchbay.backends.sqlite import audiences as sqlite_audiences
from patchbay.backends.sqlite.audiences import SqliteAudienceStore
from patchbay.errors import PatchbayError
from tests.deployments import BackendSpec, Stores

NOW = 1_700_000_000_000
#: More than any test stores: a read that returns everything.
ALL = 1_000_000


@pytest.fixture
def store(backend: Backend) -> AudienceStore:
    return backend.audiences


def audience(name: str, at: int = NOW, version: int = 1) -> AudienceRecord:
    """A new audience named ``name`` (its id is the store's to give)."""
    return AudienceRecord(
        id=0,
        name=name,
        description=f"{name} users",
        definition=b'{"all":[{"event":"%s"}]}' % name.encode(),
        created_at_ms=at,
        updated_at_ms=at,
        version=version,
    )


def add(store: AudienceStore, *names: str) -> list[int]:
    """Add audiences; their ids."""
    return [store.add_audience(audience(n)).id for n in names]


def connection(audience_id: int, output: str = "hook", **fields: Any) -> AudienceConnection:
    return AudienceConnection(audience_id=audience_id, output=output, created_at_ms=NOW, **fields)


def user(mpid: int, next_check_ms: int | None = None, count: int = 1) -> SegmentUser:
    """A user state whose tally of condition 1 is ``count`` (to tell versions apart)."""
    return SegmentUser(
        mpid=mpid,
        tallies={1: Tally(count=count, total=2.5 * count), 2: Tally(events=[(NOW, 1.0)])},
        environments=["production"],
        audiences=[1],
        next_check_ms=next_check_ms,
    )


def change(
    audience_id: int, mpid: int, output: str = "hook", action: str = "add", at: int = NOW
) -> NewPendingChange:
    return NewPendingChange(
        output=output,
        audience_id=audience_id,
        mpid=mpid,
        action=cast(AudienceAction, action),
        at_ms=at,
    )


def condition(condition_id: int, **fields: Any) -> ConditionRecord:
    return ConditionRecord(
        id=condition_id, key=f'{{"event":"e{condition_id}"}}', status="building", **fields
    )


def build(audience_id: int, **fields: Any) -> AudienceBuild:
    return AudienceBuild(
        audience_id=audience_id, version=1, phase="scanning", started_at_ms=NOW, **fields
    )


def at(partition: int, offset: int) -> LogPosition:
    return LogPosition(partition, offset)


def seqs(pending: list[PendingChange]) -> list[int]:
    return [p.seq for p in pending]


def keys(connections: list[AudienceConnection]) -> list[tuple[int, str]]:
    return [(c.audience_id, c.output) for c in connections]


# -- audiences -----------------------------------------------------------------------------


def test_empty_store(store: AudienceStore) -> None:
    """A new store has nothing; changing what does not exist changes nothing."""
    assert store.list_audiences() == []
    assert store.get_audience("a") is None
    assert store.get_audience(1) is None
    assert store.update_audience(msgspec.structs.replace(audience("a"), id=1)) is False
    assert store.delete_audience(1) is False
    assert store.list_audience_connections() == []
    assert store.remove_audience_connection(1, "hook") is False
    assert store.subscribed(1, "hook", {}, NOW) is False
    assert store.checkpoint() == {}
    assert store.conditions() == []
    assert store.builds() == []
    assert store.users([1, 2]) == {}
    assert store.users([]) == {}
    assert store.scan_users(None, 10) == []
    assert store.count_users() == 0
    assert store.due_users(NOW, 10) == []
    assert store.members(1, None, 10) == []
    assert store.sizes() == {}
    assert store.memberships(1) == []
    assert store.pending("hook", 10) == []
    assert store.pending_outputs() == {}
    store.commit(SegmentChanges())
    store.commit(SegmentChanges(), {})
    store.reset()
    assert store.list_audiences() == []


def test_ids_increase_and_are_never_reused(store: AudienceStore) -> None:
    """The store gives positive ids in increasing order, ignoring the id it is given; an
    id is never given again, not even after its audience (the newest) was deleted."""
    given = msgspec.structs.replace(audience("a"), id=999)
    first = store.add_audience(given)
    assert first == msgspec.structs.replace(given, id=first.id)
    assert 0 < first.id <= MAX_AUDIENCE_ID
    second, third = add(store, "b", "c")
    assert first.id < second < third
    assert store.delete_audience(third) is True
    (fourth,) = add(store, "d")
    assert fourth > third
    for audience_id in (first.id, second, fourth):
        store.delete_audience(audience_id)
    (fifth,) = add(store, "a")
    assert fifth > fourth
    assert [a.id for a in store.list_audiences()] == [fifth]


def test_duplicate_names_are_refused_on_add_and_update(store: AudienceStore) -> None:
    """A name is taken by one audience at a time: adding or renaming to a taken name is
    refused and changes nothing; an audience keeps its own name on update; a deleted
    audience's name is free again."""
    a, b = add(store, "a", "b")
    with pytest.raises(DuplicateName):
        store.add_audience(audience("a"))
    renamed = msgspec.structs.replace(audience("a", at=NOW + 1), id=b)
    with pytest.raises(DuplicateName):
        store.update_audience(renamed)
    assert [x.name for x in store.list_audiences()] == ["a", "b"]
    assert store.get_audience(b) == msgspec.structs.replace(audience("b"), id=b)
    assert store.update_audience(msgspec.structs.replace(audience("b", version=2), id=b))
    assert store.delete_audience(a)
    (again,) = add(store, "a")
    assert again > b
    assert store.update_audience(msgspec.structs.replace(audience("c"), id=again))
    assert store.update_audience(msgspec.structs.replace(audience("a"), id=b))
    assert [(x.id, x.name) for x in store.list_audiences()] == [(b, "a"), (again, "c")]


def test_get_by_name_or_id_and_update(store: AudienceStore) -> None:
    """An audience is found by its name (a ``str``, even one of digits) or by its id (an
    ``int``); an update replaces every field but the id and ``created_at_ms``."""
    a, b = add(store, "a", "b")
    stored_a = msgspec.structs.replace(audience("a"), id=a)
    assert store.get_audience("a") == store.get_audience(a) == stored_a
    assert store.get_audience(str(a)) is None
    assert store.get_audience("missing") is None
    assert store.get_audience(b + 100) is None

    newer = AudienceRecord(
        id=a,
        name="a2",
        description="changed",
        definition=b'{"any":[]}',
        created_at_ms=NOW + 50,
        updated_at_ms=NOW + 60,
        version=2,
    )
    assert store.update_audience(newer) is True
    expected = msgspec.structs.replace(newer, created_at_ms=NOW)
    assert store.get_audience(a) == store.get_audience("a2") == expected
    assert store.get_audience("a") is None
    assert store.list_audiences() == [expected, msgspec.structs.replace(audience("b"), id=b)]
    assert store.update_audience(msgspec.structs.replace(newer, id=b + 100)) is False
    assert len(store.list_audiences()) == 2


def test_version_changes_with_every_owner_write_only(store: AudienceStore) -> None:
    """Every write of audiences or audience connections gives a version never seen
    before; reads, the stage's commits and a reset do not change it."""
    seen = [store.version()]

    def moved() -> None:
        assert store.version() not in seen
        seen.append(store.version())

    (a,) = add(store, "a")
    moved()
    store.update_audience(msgspec.structs.replace(audience("a", version=2), id=a))
    moved()
    store.put_audience_connection(connection(a))
    moved()
    store.put_audience_connection(connection(a, settings={"k": "v"}))
    moved()
    store.subscribed(a, "hook", {"list": "1"}, NOW)
    moved()

    store.commit(
        SegmentChanges(
            users=[user(1)],
            joined=[(a, 1)],
            pending=[change(a, 1)],
            conditions=[condition(1)],
            builds=[build(a)],
        ),
        {0: at(0, 1)},
    )
    store.commit(SegmentChanges(left=[(a, 1)], flushed=seqs(store.pending("hook", 10))))
    store.list_audiences()
    store.list_audience_connections()
    store.reset()
    assert store.version() == seen[-1]

    store.remove_audience_connection(a, "hook")
    moved()
    store.delete_audience(a)
    moved()


# -- connections ---------------------------------------------------------------------------


def test_connections_by_audience_then_output(store: AudienceStore) -> None:
    """Connections are listed by audience, then output; one needs an existing audience."""
    a, b = add(store, "a", "b")
    store.put_audience_connection(connection(b, "zeta"))
    store.put_audience_connection(connection(a, "zeta"))
    store.put_audience_connection(connection(a, "alpha", settings={"list": "x"}))
    assert keys(store.list_audience_connections()) == [(a, "alpha"), (a, "zeta"), (b, "zeta")]
    assert store.list_audience_connections()[0] == connection(a, "alpha", settings={"list": "x"})
    with pytest.raises(PatchbayError):
        store.put_audience_connection(connection(b + 100))
    assert len(store.list_audience_connections()) == 3


def test_put_replaces_a_connection_but_keeps_the_partners_answer(store: AudienceStore) -> None:
    """``subscribed`` records the partner's settings and time on an existing connection;
    putting the connection again replaces the owner's fields and keeps the partner's."""
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a, settings={"list": "x"}))
    answer = {"audience_key": "k-1"}
    assert store.subscribed(a, "hook", answer, NOW + 5) is True
    answer["audience_key"] = "changed by the caller"
    assert store.list_audience_connections() == [
        connection(
            a,
            settings={"list": "x"},
            partner_settings={"audience_key": "k-1"},
            subscribed_at_ms=NOW + 5,
        )
    ]

    replacement = AudienceConnection(
        audience_id=a,
        output="hook",
        created_at_ms=NOW + 10,
        settings={"list": "y"},
        attributes=["email", "$firstname"],
        partner_settings={"ignored": "yes"},
        subscribed_at_ms=None,
    )
    store.put_audience_connection(replacement)
    assert store.list_audience_connections() == [
        msgspec.structs.replace(
            replacement, partner_settings={"audience_key": "k-1"}, subscribed_at_ms=NOW + 5
        )
    ]
    assert store.subscribed(a, "other", {}, NOW) is False
    assert store.subscribed(a + 1, "hook", {}, NOW) is False


def test_connections_are_returned_as_copies(store: AudienceStore) -> None:
    """Changing a connection after putting it, or one returned, changes nothing stored."""
    (a,) = add(store, "a")
    put = connection(a, settings={"list": "x"}, attributes=["email"])
    store.put_audience_connection(put)
    put.settings["list"] = "changed"
    returned = store.list_audience_connections()[0]
    returned.settings["more"] = "x"
    returned.attributes.append("phone")
    assert store.list_audience_connections() == [
        connection(a, settings={"list": "x"}, attributes=["email"])
    ]


def test_removing_a_connection_drops_its_pending_changes(store: AudienceStore) -> None:
    """Removing a connection removes the changes waiting for that audience and output
    only; changes committed for it afterwards are left out."""
    a, b = add(store, "a", "b")
    for audience_id, output in ((a, "hook"), (a, "other"), (b, "hook")):
        store.put_audience_connection(connection(audience_id, output))
    store.commit(
        SegmentChanges(pending=[change(a, 1), change(a, 1, "other"), change(b, 2), change(a, 3)])
    )
    assert store.remove_audience_connection(a, "hook") is True
    assert store.remove_audience_connection(a, "hook") is False
    assert [(p.audience_id, p.mpid) for p in store.pending("hook", ALL)] == [(b, 2)]
    assert [(p.audience_id, p.mpid) for p in store.pending("other", ALL)] == [(a, 1)]
    store.commit(SegmentChanges(pending=[change(a, 4), change(b, 5)]))
    assert [(p.audience_id, p.mpid) for p in store.pending("hook", ALL)] == [(b, 2), (b, 5)]
    assert keys(store.list_audience_connections()) == [(a, "other"), (b, "hook")]


# -- the stage's commits -------------------------------------------------------------------


def test_user_states_are_written_replaced_and_dropped(store: AudienceStore) -> None:
    """A commit writes user states whole (the last of one MPID wins) and drops others;
    states are returned as copies."""
    written = user(1, count=1)
    store.commit(SegmentChanges(users=[written, user(2, NOW), user(-3)]))
    written.tallies[1].count = 99
    written.audiences.append(7)
    assert store.users([1, 2, -3, 4]) == {1: user(1), 2: user(2, NOW), -3: user(-3)}
    assert store.count_users() == 3

    store.commit(SegmentChanges(users=[user(1, count=5), user(1, count=6)]))
    assert store.users([1]) == {1: user(1, count=6)}

    returned = store.users([1])[1]
    returned.tallies[1].count = 1000
    returned.environments.append("development")
    store.scan_users(None, 10)[0].tallies.clear()
    assert store.users([1, -3]) == {1: user(1, count=6), -3: user(-3)}

    store.commit(SegmentChanges(dropped_users=[2, -3, 404]))
    assert store.users([1, 2, -3]) == {1: user(1, count=6)}
    assert store.count_users() == 1


def test_members_sizes_and_memberships(store: AudienceStore) -> None:
    """Joins and leaves give the members of each audience (ascending, paged after an MPID),
    their counts and each user's audiences; joining twice or leaving as a non-member
    changes nothing."""
    a, b = add(store, "a", "b")
    store.commit(SegmentChanges(joined=[(a, 5), (a, 3), (b, 3), (a, -7), (a, 5)]))
    assert store.members(a, None, 10) == [-7, 3, 5]
    assert store.members(a, None, 2) == [-7, 3]
    assert store.members(a, 3, 2) == [5]
    assert store.members(a, -100, 1) == [-7]
    assert store.members(a, 5, 10) == []
    assert store.members(a, None, 0) == []
    assert store.sizes() == {a: 3, b: 1}
    assert store.memberships(3) == [a, b]
    assert store.memberships(-7) == [a]
    assert store.memberships(4) == []

    store.commit(SegmentChanges(joined=[(a, 3)], left=[(a, 99), (b, 5), (b, 3)]))
    assert store.sizes() == {a: 3}
    assert store.members(b, None, 10) == []
    assert store.memberships(3) == [a]

    store.commit(SegmentChanges(left=[(a, -7), (a, 3), (a, 5)]))
    assert store.sizes() == {}
    assert store.memberships(3) == []

    store.commit(SegmentChanges(joined=[(a, 1), (b, 1)]))
    store.reset()
    assert store.sizes() == {}
    store.commit(SegmentChanges(joined=[(a, 1)]))
    assert store.sizes() == {a: 1}  # counted from nothing again


def test_joins_and_leaves_of_one_membership_in_one_commit(store: AudienceStore) -> None:
    """A membership both joined and left in one commit (its joins and leaves alternate)
    ends where the balance says: more joins, in; more leaves, out; as many, as it was."""
    (a,) = add(store, "a")
    store.commit(SegmentChanges(joined=[(a, 1), (a, 2), (a, 3)], left=[(a, 1)]))
    assert store.members(a, None, 10) == [2, 3]
    store.commit(SegmentChanges(joined=[(a, 2), (a, 4), (a, 5)], left=[(a, 2), (a, 4)]))
    assert store.members(a, None, 10) == [2, 3, 5]
    store.commit(
        SegmentChanges(joined=[(a, 3), (a, 1), (a, 1)], left=[(a, 3), (a, 3), (a, 1), (a, 5)])
    )
    assert store.members(a, None, 10) == [1, 2]


def test_paging_through_many_members(store: AudienceStore) -> None:
    """Pages of members, each after the last of the previous one, give every member once."""
    (a,) = add(store, "a")
    mpids = list(range(-300, 900, 3))
    store.commit(SegmentChanges(joined=[(a, m) for m in reversed(mpids)]))
    paged: list[int] = []
    after: int | None = None
    while page := store.members(a, after, 64):
        paged.extend(page)
        after = page[-1]
    assert paged == mpids
    assert store.sizes() == {a: len(mpids)}


def test_pending_changes_by_seq_and_flushed(store: AudienceStore) -> None:
    """Pending changes get increasing seqs (across outputs, never reused, even after the
    newest was flushed) and are read per output by seq; flushed ones go;
    ``pending_outputs`` counts each output's and gives its oldest time."""
    a, b = add(store, "a", "b")
    for audience_id, output in ((a, "hook"), (a, "other"), (b, "hook")):
        store.put_audience_connection(connection(audience_id, output))
    store.commit(
        SegmentChanges(
            pending=[
                change(a, 1, at=NOW + 3),
                change(a, 1, "other", "delete", NOW + 9),
                change(b, 2, action="attribute_update", at=NOW + 1),
                change(a, 4, at=NOW + 2),
            ]
        )
    )
    hook = store.pending("hook", 10)
    other = store.pending("other", 10)
    assert [(p.audience_id, p.mpid, p.action, p.at_ms) for p in hook] == [
        (a, 1, "add", NOW + 3),
        (b, 2, "attribute_update", NOW + 1),
        (a, 4, "add", NOW + 2),
    ]
    assert other == [
        PendingChange(
            seq=other[0].seq, output="other", audience_id=a, mpid=1, action="delete", at_ms=NOW + 9
        )
    ]
    assert hook[0].seq < other[0].seq < hook[1].seq < hook[2].seq
    assert store.pending("hook", 2) == hook[:2]
    assert store.pending("hook", 0) == []
    assert store.pending("missing", 10) == []
    assert store.pending_outputs() == {"hook": (3, NOW + 1), "other": (1, NOW + 9)}

    newest = hook[2].seq
    store.commit(SegmentChanges(flushed=[hook[0].seq, newest, newest + 1000]))
    assert store.pending("hook", 10) == [hook[1]]
    store.commit(SegmentChanges(pending=[change(a, 5)], flushed=[hook[1].seq]))
    (added,) = store.pending("hook", 10)
    assert added.seq > newest
    assert store.pending_outputs() == {"hook": (1, NOW), "other": (1, NOW + 9)}
    store.commit(SegmentChanges(flushed=[added.seq, other[0].seq]))
    assert store.pending_outputs() == {}


def test_conditions_and_builds_are_upserted(store: AudienceStore) -> None:
    """Conditions (by id) and builds (by audience) are written whole and returned in order,
    as copies."""
    a, b = add(store, "a", "b")
    store.commit(
        SegmentChanges(
            conditions=[condition(2), condition(1, target={0: at(0, 9)})],
            builds=[build(b), build(a)],
        )
    )
    assert store.conditions() == [condition(1, target={0: at(0, 9)}), condition(2)]
    assert store.builds() == [build(a), build(b)]

    done = msgspec.structs.replace(
        condition(1, target={0: at(0, 9)}, reached={0: at(0, 9)}, scanned=40), status="built"
    )
    live = msgspec.structs.replace(
        build(a, cursor=77, users_done=5, users_total=5, finished_at_ms=NOW), phase="live"
    )
    store.commit(SegmentChanges(conditions=[done], builds=[live]))
    assert store.conditions() == [done, condition(2)]
    assert store.builds() == [live, build(b)]

    store.conditions()[0].target[1] = at(1, 1)
    assert store.conditions()[0] == done


def test_fenced_commit_applies_only_from_where_it_started(store: AudienceStore) -> None:
    """A commit given the positions it started from (``since``; ``None``: no position yet)
    applies its changes and checkpoint only if the stage's stored checkpoint is still
    there; otherwise it raises ``CheckpointMoved`` and applies nothing."""
    (a,) = add(store, "a")
    store.commit(SegmentChanges(joined=[(a, 1)]), {0: at(0, 5)}, since={0: None})
    with pytest.raises(CheckpointMoved) as caught:
        store.commit(
            SegmentChanges(joined=[(a, 2)], users=[user(2)]), {0: at(0, 7)}, since={0: None}
        )
    assert caught.value.partitions == [0]
    with pytest.raises(CheckpointMoved):
        store.commit(SegmentChanges(joined=[(a, 3)]), {0: at(0, 7)}, since={0: at(0, 4)})
    assert store.checkpoint() == {0: at(0, 5)}
    assert store.members(a, None, 10) == [1] and store.users([2]) == {}
    store.commit(SegmentChanges(joined=[(a, 2)]), {0: at(0, 7)}, since={0: at(0, 5)})
    assert store.checkpoint() == {0: at(0, 7)} and store.members(a, None, 10) == [1, 2]


def test_checkpoint_moves_only_when_given(store: AudienceStore) -> None:
    """The checkpoint is kept per partition: a commit with one moves the partitions it
    names, one without leaves it; the returned checkpoint is a copy."""
    (a,) = add(store, "a")
    store.commit(SegmentChanges(joined=[(a, 1)]))
    assert store.checkpoint() == {}
    store.commit(SegmentChanges(), {0: at(0, 5), 2: at(2, 3)})
    assert store.checkpoint() == {0: at(0, 5), 2: at(2, 3)}
    store.commit(SegmentChanges(users=[user(1)]))
    store.commit(SegmentChanges(users=[user(2)]), {})
    assert store.checkpoint() == {0: at(0, 5), 2: at(2, 3)}
    store.commit(SegmentChanges(left=[(a, 1)]), {0: at(0, 9)})
    returned = store.checkpoint()
    assert returned == {0: at(0, 9), 2: at(2, 3)}
    returned[1] = at(1, 1)
    assert store.checkpoint() == {0: at(0, 9), 2: at(2, 3)}


def test_a_failed_commit_changes_nothing(store: AudienceStore) -> None:
    """A commit that fails (here: a user state that cannot be encoded) applies nothing of
    its changes, nor its checkpoint."""
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a))
    store.commit(SegmentChanges(users=[user(1)], joined=[(a, 1)]), {0: at(0, 1)})
    broken = SegmentUser(mpid=3, environments=cast(list[str], [object()]))
    with pytest.raises(TypeError):
        store.commit(
            SegmentChanges(
                users=[user(2), broken],
                dropped_users=[1],
                joined=[(a, 2)],
                left=[(a, 1)],
                pending=[change(a, 2)],
                conditions=[condition(1)],
                builds=[build(a)],
            ),
            {0: at(0, 2)},
        )
    assert store.users([1, 2, 3]) == {1: user(1)}
    assert store.members(a, None, 10) == [1]
    assert store.pending_outputs() == {}
    assert store.conditions() == []
    assert store.builds() == []
    assert store.checkpoint() == {0: at(0, 1)}


def test_changes_of_a_deleted_audience_are_left_out(store: AudienceStore) -> None:
    """Joins, leaves, pending changes and builds of audiences that no longer exist (or
    never did) are ignored; the rest of the commit is applied."""
    a, b = add(store, "a", "b")
    store.put_audience_connection(connection(a))
    store.put_audience_connection(connection(b))
    store.delete_audience(a)
    store.commit(
        SegmentChanges(
            users=[user(1)],
            joined=[(a, 1), (b, 1), (b + 100, 1)],
            left=[(a, 1)],
            pending=[change(a, 1), change(b, 1), change(b + 100, 1)],
            builds=[build(a), build(b), build(b + 100)],
        ),
        {0: at(0, 1)},
    )
    assert store.sizes() == {b: 1}
    assert store.memberships(1) == [b]
    assert store.members(a, None, 10) == []
    assert [p.audience_id for p in store.pending("hook", 10)] == [b]
    assert store.builds() == [build(b)]
    assert store.users([1]) == {1: user(1)}
    assert store.checkpoint() == {0: at(0, 1)}


def test_delete_audience_removes_what_belongs_to_it(store: AudienceStore) -> None:
    """Deleting an audience removes its connections, build, memberships and pending
    changes, and nothing of the other audiences' or the users' states."""
    a, b = add(store, "a", "b")
    for audience_id in (a, b):
        store.put_audience_connection(connection(audience_id))
        store.put_audience_connection(connection(audience_id, "other"))
    store.commit(
        SegmentChanges(
            users=[user(1), user(2)],
            joined=[(a, 1), (a, 2), (b, 2)],
            pending=[change(a, 1), change(b, 2), change(a, 2, "other")],
            builds=[build(a), build(b)],
        )
    )
    assert store.delete_audience(a) is True
    assert store.delete_audience(a) is False
    assert store.get_audience(a) is None
    assert store.get_audience("a") is None
    assert [x.id for x in store.list_audiences()] == [b]
    assert keys(store.list_audience_connections()) == [(b, "hook"), (b, "other")]
    assert store.builds() == [build(b)]
    assert store.members(a, None, 10) == []
    assert store.sizes() == {b: 1}
    assert store.memberships(1) == []
    assert store.memberships(2) == [b]
    assert [(p.audience_id, p.mpid) for p in store.pending("hook", 10)] == [(b, 2)]
    assert store.pending("other", 10) == []
    assert store.pending_outputs() == {"hook": (1, NOW)}
    assert store.count_users() == 2


def test_due_users_earliest_first(store: AudienceStore) -> None:
    """``due_users`` gives the users whose next check is at or before now, earliest first,
    at most ``limit``; users without one, or dropped, never come."""
    store.commit(
        SegmentChanges(
            users=[user(1, 300), user(2, 100), user(3), user(4, 200), user(-6, 50), user(7, 400)]
        )
    )
    assert store.due_users(200, 10) == [-6, 2, 4]
    assert store.due_users(49, 10) == []
    assert store.due_users(50, 10) == [-6]
    assert store.due_users(1_000, 2) == [-6, 2]
    assert store.due_users(1_000, 0) == []
    store.commit(SegmentChanges(users=[user(2), user(3, 10), user(7, 60)], dropped_users=[4]))
    assert store.due_users(1_000, 10) == [3, -6, 7, 1]


def test_scan_users_pages_by_mpid(store: AudienceStore) -> None:
    """Pages of user states after an MPID give every user once, by MPID (negative ones
    included)."""
    mpids = list(range(-150, 250, 3))
    store.commit(SegmentChanges(users=[user(m) for m in reversed(mpids)]))
    scanned: list[int] = []
    after: int | None = None
    while page := store.scan_users(after, 25):
        scanned.extend(u.mpid for u in page)
        after = page[-1].mpid
    assert scanned == mpids
    assert store.count_users() == len(mpids)
    assert store.scan_users(None, 2) == [user(-150), user(-147)]
    assert store.scan_users(-149, 1) == [user(-147)]
    assert store.scan_users(mpids[-1], 10) == []
    assert store.scan_users(None, 0) == []

    store.commit(SegmentChanges(users=[user(-149), user(1_000)]))
    assert [u.mpid for u in store.scan_users(None, 3)] == [-150, -149, -147]
    assert store.scan_users(mpids[-1], 10) == [user(1_000)]
    store.commit(SegmentChanges(dropped_users=[-147, 1_000]))
    assert [u.mpid for u in store.scan_users(None, 3)] == [-150, -149, -144]
    assert store.scan_users(mpids[-1], 10) == []
    assert store.count_users() == len(mpids)


def test_reset_keeps_audiences_and_connections_only(store: AudienceStore) -> None:
    """``reset`` forgets the stage's records and checkpoint; audiences, connections and the
    version stay, and the seqs of pending changes go on."""
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a))
    store.subscribed(a, "hook", {"k": "v"}, NOW)
    store.commit(
        SegmentChanges(
            users=[user(1, NOW)],
            joined=[(a, 1)],
            pending=[change(a, 1)],
            conditions=[condition(1)],
            builds=[build(a)],
        ),
        {0: at(0, 4)},
    )
    (before,) = store.pending("hook", 10)
    assert store.members(a, None, 10) == [1]
    assert [u.mpid for u in store.scan_users(None, 10)] == [1]
    audiences, connections = store.list_audiences(), store.list_audience_connections()
    version = store.version()

    store.reset()

    assert store.list_audiences() == audiences
    assert store.list_audience_connections() == connections
    assert store.version() == version
    assert store.checkpoint() == {}
    assert store.conditions() == []
    assert store.builds() == []
    assert store.users([1]) == {}
    assert store.count_users() == 0
    assert store.due_users(NOW, 10) == []
    assert store.scan_users(None, 10) == []
    assert store.sizes() == {}
    assert store.members(a, None, 10) == []
    assert store.memberships(1) == []
    assert store.pending_outputs() == {}
    store.commit(SegmentChanges(pending=[change(a, 1)], joined=[(a, 2)]), {0: at(0, 1)})
    (after,) = store.pending("hook", 10)
    assert after.seq > before.seq
    assert store.members(a, None, 10) == [2]


def test_commits_from_threads(store: AudienceStore) -> None:
    """Threads committing at once each get their own seqs and lose no join."""
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a))
    threads, commits = 4, 8
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            start.wait()
            for i in range(commits):
                mpid = thread * 100 + i
                store.commit(SegmentChanges(joined=[(a, mpid)], pending=[change(a, mpid)]))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    pending = store.pending("hook", ALL)
    assert len({p.seq for p in pending}) == threads * commits
    assert seqs(pending) == sorted(seqs(pending))
    assert sorted(p.mpid for p in pending) == store.members(a, None, ALL)
    assert store.sizes() == {a: threads * commits}


@pytest.mark.persists
def test_everything_persists_across_reopen(stores: Stores, backend: Backend) -> None:
    """Audiences, connections, the version, the stage's records and checkpoint are there
    after reopening, and neither audience ids nor seqs are given again."""
    old = backend.audiences
    a, b = add(old, "a", "b")
    old.delete_audience(b)
    old.put_audience_connection(connection(a, settings={"list": "x"}, attributes=["email"]))
    old.subscribed(a, "hook", {"k": "v"}, NOW)
    old.commit(
        SegmentChanges(
            users=[user(1, NOW), user(2)],
            joined=[(a, 1), (a, 2)],
            pending=[change(a, 1), change(a, 2, action="delete")],
            conditions=[condition(1, target={0: at(0, 3)})],
            builds=[msgspec.structs.replace(build(a, cursor=1), phase="evaluating")],
        ),
        {0: at(0, 3), 1: at(1, 7)},
    )
    newest = max(seqs(old.pending("hook", 10)))
    old.commit(SegmentChanges(flushed=[newest]))
    expected = (
        old.list_audiences(),
        old.list_audience_connections(),
        old.version(),
        old.checkpoint(),
        old.conditions(),
        old.builds(),
        old.users([1, 2]),
        old.pending("hook", 10),
    )

    store = stores.reopen(backend).audiences
    assert (
        store.list_audiences(),
        store.list_audience_connections(),
        store.version(),
        store.checkpoint(),
        store.conditions(),
        store.builds(),
        store.users([1, 2]),
        store.pending("hook", 10),
    ) == expected
    assert store.due_users(NOW, 10) == [1]
    assert store.members(a, None, 10) == [1, 2]
    assert store.sizes() == {a: 2}
    assert store.memberships(2) == [a]
    assert store.count_users() == 2
    assert add(store, "c")[0] > b
    store.commit(SegmentChanges(pending=[change(a, 3)]))
    assert max(seqs(store.pending("hook", 10))) > newest
    assert store.version() != expected[2]


# -- the property --------------------------------------------------------------------------

#: One commit: joins and leaves as (audience index, MPID), pending changes as (audience
#: index, MPID, output index), how many of the oldest waiting changes it flushes, and which
#: audience (by index) is deleted before it, if any.
Step = tuple[
    list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int, int]], int, int | None
]

_pairs = st.lists(st.tuples(st.integers(0, 2), st.integers(-3, 6)), max_size=6)
_step = st.tuples(
    _pairs,
    _pairs,
    st.lists(st.tuples(st.integers(0, 2), st.integers(-3, 6), st.integers(0, 1)), max_size=4),
    st.integers(0, 3),
    st.none() | st.integers(0, 2),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_step, min_size=1, max_size=6))
def test_memberships_and_pending_follow_a_model(spec: BackendSpec, steps: list[Step]) -> None:
    """Over any commits of joins, leaves, pending changes and flushes, with audiences
    deleted in between, the store holds what a model of sets and a list holds: members,
    sizes and memberships, and the changes waiting for each output, in the order they were
    committed, under increasing seqs never given twice."""
    outputs = ("hook", "other")
    with tempfile.TemporaryDirectory() as location:
        backend = spec.open(Path(location))
        try:
            store = backend.audiences
            ids = add(store, "a", "b", "c")
            for audience_id in ids:
                for output in outputs:
                    store.put_audience_connection(connection(audience_id, output))
            members: dict[int, set[int]] = {i: set() for i in ids}
            waiting: list[tuple[str, int, int]] = []  # (output, audience, MPID), oldest first
            given_seqs: set[int] = set()
            for joined, left, changes, flush, delete in steps:
                if delete is not None:
                    store.delete_audience(ids[delete])
                    members.pop(ids[delete], None)
                    waiting = [w for w in waiting if w[1] != ids[delete]]
                stored = sorted(p.seq for o in outputs for p in store.pending(o, ALL))
                store.commit(
                    SegmentChanges(
                        joined=[(ids[i], m) for i, m in joined],
                        left=[(ids[i], m) for i, m in left],
                        pending=[change(ids[i], m, outputs[o]) for i, m, o in changes],
                        flushed=stored[:flush],
                    )
                )
                del waiting[:flush]
                balance: dict[tuple[int, int], int] = {}
                for pair in joined:
                    balance[pair] = balance.get(pair, 0) + 1
                for pair in left:
                    balance[pair] = balance.get(pair, 0) - 1
                for (i, m), n in balance.items():
                    if ids[i] in members and n > 0:
                        members[ids[i]].add(m)
                    elif ids[i] in members and n < 0:
                        members[ids[i]].discard(m)
                waiting.extend((outputs[o], ids[i], m) for i, m, o in changes if ids[i] in members)

                for audience_id in ids:
                    assert store.members(audience_id, None, ALL) == sorted(
                        members.get(audience_id, ())
                    )
                assert store.sizes() == {a: len(m) for a, m in members.items() if m}
                for mpid in range(-3, 7):
                    assert store.memberships(mpid) == sorted(
                        a for a, m in members.items() if mpid in m
                    )
                now = sorted(
                    (p for o in outputs for p in store.pending(o, ALL)), key=lambda p: p.seq
                )
                assert [(p.output, p.audience_id, p.mpid) for p in now] == waiting
                for output in outputs:
                    assert seqs(store.pending(output, ALL)) == [
                        p.seq for p in now if p.output == output
                    ]
                new_seqs = {p.seq for p in now} - set(stored)
                assert not new_seqs & given_seqs
                assert all(s > max(stored, default=0) for s in new_seqs)
                given_seqs |= new_seqs | set(stored)
        finally:
            backend.close()


# -- backend-specific ----------------------------------------------------------------------


def test_sqlite_keeps_audiences_in_a_file_of_their_own(tmp_path: Path) -> None:
    """The embedded backend keeps the audience store in ``segment.db``."""
    backend = open_sqlite(tmp_path)
    try:
        add(backend.audiences, "a")
    finally:
        backend.close()
    assert (tmp_path / SEGMENT_FILE).exists()


def test_sqlite_keys_memberships_of_earlier_versions_by_user(tmp_path: Path) -> None:
    """A ``segment.db`` whose memberships are keyed by (audience, MPID), as earlier
    versions kept them, is rebuilt keyed by (MPID, audience) when opened: the same
    members, memberships and sizes, and the sizes still kept as members join and leave."""
    backend = open_sqlite(tmp_path)
    try:
        a, b = add(backend.audiences, "a", "b")
        backend.audiences.commit(
            SegmentChanges(users=[user(m) for m in (1, 2, 3)], joined=[(a, 1), (a, 2), (b, 2)])
        )
        conn = cast(SqliteAudienceStore, backend.audiences)._db.conn()
        conn.executescript(
            "BEGIN; CREATE TABLE old (audience_id INTEGER NOT NULL, mpid INTEGER NOT NULL,"
            " PRIMARY KEY (audience_id, mpid)) WITHOUT ROWID;"
            " INSERT INTO old SELECT audience_id, mpid FROM memberships;"
            " DROP TABLE memberships; ALTER TABLE old RENAME TO memberships; COMMIT;"
        )
    finally:
        backend.close()
    backend = open_sqlite(tmp_path)
    try:
        store = backend.audiences
        conn = cast(SqliteAudienceStore, store)._db.conn()
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'memberships'")
        assert "PRIMARY KEY (mpid, audience_id)" in sql[0]
        assert store.members(a, None, 10) == [1, 2] and store.members(b, None, 10) == [2]
        assert store.memberships(2) == [a, b] and store.sizes() == {a: 2, b: 1}
        store.commit(SegmentChanges(joined=[(b, 3)], left=[(a, 1)]))
        assert store.sizes() == {a: 1, b: 2} and store.members(b, 2, 10) == [3]
    finally:
        backend.close()


def test_sqlite_schedule_keeps_what_users_were_rescheduled_from_until_it_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user rescheduled (or dropped) leaves its old entry in the schedule: met once its
    second passed, it is removed and never makes the user due early or twice; more stale
    entries than a page hide no user that is due behind them."""
    monkeypatch.setattr(sqlite_audiences, "SCHEDULE_PAGE", 4)
    backend = open_sqlite(tmp_path)
    try:
        store = cast(SqliteAudienceStore, backend.audiences)
        conn = store._db.conn()
        store.commit(SegmentChanges(users=[user(m, 1_000 + m) for m in range(10)]))
        # all rescheduled to later seconds, one of them dropped, one due at 2.5 s
        store.commit(
            SegmentChanges(
                users=[*(user(m, 60_000) for m in range(1, 9)), user(9, 2_500)],
                dropped_users=[0],
            )
        )
        assert conn.execute("SELECT count(*) FROM segment_schedule").fetchone()[0] == 19
        assert store.due_users(2_000, 10) == []
        assert store.due_users(2_600, 10) == [9]
        # the entries of the first second are gone; 9's stays until it is written again
        assert conn.execute("SELECT count(*) FROM segment_schedule WHERE at_s = 1").fetchone() == (
            0,
        )
        store.commit(SegmentChanges(users=[user(9)]))
        assert store.due_users(59_999, 10) == []
        assert store.due_users(60_000, 3) == [1, 2, 3]
        assert conn.execute("SELECT count(*) FROM segment_schedule").fetchone()[0] == 8
    finally:
        backend.close()


def test_sqlite_schedule_of_earlier_versions_comes_from_the_users(tmp_path: Path) -> None:
    """A ``segment.db`` that kept the users' next checks in an index (earlier versions) gets
    its schedule from them when opened, and the index is dropped."""
    backend = open_sqlite(tmp_path)
    try:
        store = cast(SqliteAudienceStore, backend.audiences)
        store.commit(SegmentChanges(users=[user(1, 5_000), user(2), user(3, 1_500)]))
        conn = store._db.conn()
        conn.executescript(
            "BEGIN; DELETE FROM segment_schedule;"
            " CREATE INDEX segment_users_due ON segment_users (next_check_ms)"
            " WHERE next_check_ms IS NOT NULL; COMMIT;"
        )
    finally:
        backend.close()
    backend = open_sqlite(tmp_path)
    try:
        store = cast(SqliteAudienceStore, backend.audiences)
        conn = store._db.conn()
        assert (
            conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'segment_users_due'").fetchone()
            is None
        )
        assert store.due_users(10_000, 10) == [3, 1]
    finally:
        backend.close()


def test_sqlite_rolls_back_a_commit_that_fails_halfway(tmp_path: Path) -> None:
    """A commit that fails after some of its statements ran (a user state under an MPID
    too large for SQLite's integers, after more than one statement's worth of users)
    leaves nothing behind."""
    backend = open_sqlite(tmp_path)
    try:
        store = backend.audiences
        (a,) = add(store, "a")
        bad = msgspec.structs.replace(user(0), mpid=2**64)  # (written last)
        with pytest.raises(OverflowError):
            store.commit(
                SegmentChanges(users=[*(user(m) for m in range(100)), bad], joined=[(a, 1)]),
                {0: at(0, 1)},
            )
        assert store.count_users() == 0
        assert store.sizes() == {}
        assert store.checkpoint() == {}
    finally:
        backend.close()


def test_sqlite_commits_unsynced_and_syncs_on_demand(tmp_path: Path) -> None:
    """The engine's commits (derived state) run with ``synchronous = NORMAL`` on a ``full``
    database, and :meth:`sync` with ``FULL``; the connection is back to ``FULL`` after
    each, and a failed commit does not leave it relaxed."""
    backend = open_sqlite(tmp_path)
    try:
        store = cast(SqliteAudienceStore, backend.audiences)
        (a,) = add(store, "a")
        conn = store._db.conn()  # this thread's connection, which the store writes on
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        store.commit(SegmentChanges(users=[user(1)], joined=[(a, 1)]), {0: at(0, 1)})
        relaxed = statements.index("PRAGMA synchronous = NORMAL")
        assert statements[relaxed + 1] == "BEGIN IMMEDIATE"
        assert statements[-2:] == ["COMMIT", "PRAGMA synchronous = FULL"]
        statements.clear()
        store.sync()
        assert "BEGIN IMMEDIATE" in statements and "COMMIT" in statements
        assert not any(s.startswith("PRAGMA") for s in statements)
        bad = msgspec.structs.replace(user(2), mpid=2**64)  # (too large for SQLite)
        with pytest.raises(OverflowError):
            store.commit(SegmentChanges(users=[bad]))
        conn.set_trace_callback(None)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.memberships(1) == [a] and store.checkpoint() == {0: at(0, 1)}
    finally:
        backend.close()


def test_sqlite_audience_ids_stop_at_the_maximum(tmp_path: Path) -> None:
    """The embedded store gives the id ``MAX_AUDIENCE_ID`` and refuses to go past it."""
    backend = open_sqlite(tmp_path)
    try:
        store = backend.audiences
        add(store, "first")
        with sqlite3.connect(tmp_path / SEGMENT_FILE) as conn:
            conn.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = 'audiences'",
                (MAX_AUDIENCE_ID - 1,),
            )
        assert add(store, "last") == [MAX_AUDIENCE_ID]
        version = store.version()
        with pytest.raises(PatchbayError, match="no audience id"):
            store.add_audience(audience("beyond"))
        assert [x.name for x in store.list_audiences()] == ["first", "last"]
        assert store.version() == version
    finally:
        backend.close()


def test_memory_audience_ids_stop_at_the_maximum() -> None:
    """The in-memory store gives the id ``MAX_AUDIENCE_ID`` and refuses to go past it."""
    store = MemoryAudienceStore()
    store._last_id = MAX_AUDIENCE_ID - 1
    assert add(store, "last") == [MAX_AUDIENCE_ID]
    with pytest.raises(PatchbayError, match="no audience id"):
        store.add_audience(audience("beyond"))
    assert [x.name for x in store.list_audiences()] == ["last"]


def test_sqlite_version_is_shared_between_processes(tmp_path: Path) -> None:
    """A write through another opening of the same files (the CLI beside a running server)
    changes the version the first one reads."""
    server, cli = open_sqlite(tmp_path), open_sqlite(tmp_path)
    try:
        version = server.audiences.version()
        (a,) = add(cli.audiences, "a")
        assert server.audiences.version() != version
        assert server.audiences.get_audience(a) is not None
    finally:
        server.close()
        cli.close()


def test_sqlite_drops_the_size_triggers_of_earlier_versions(tmp_path: Path) -> None:
    """Earlier versions kept the sizes by triggers on ``memberships``: opened, the store
    drops them (each commit keeps the sizes now, and a trigger left would count twice)."""
    backend = open_sqlite(tmp_path)
    try:
        store = cast(SqliteAudienceStore, backend.audiences)
        (a,) = add(store, "a")
        store.commit(SegmentChanges(joined=[(a, 1), (a, 2)]))
        store._db.conn().executescript(
            "CREATE TRIGGER memberships_added AFTER INSERT ON memberships BEGIN"
            " UPDATE audience_sizes SET members = members + 1"
            " WHERE audience_id = NEW.audience_id; END;"
        )
    finally:
        backend.close()
    backend = open_sqlite(tmp_path)
    try:
        store = cast(SqliteAudienceStore, backend.audiences)
        conn = store._db.conn()
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == []
        )
        store.commit(SegmentChanges(joined=[(a, 3)]))
        assert store.sizes() == {a: 3}
    finally:
        backend.close()
