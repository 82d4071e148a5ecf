"""What :class:`Resolution` reports about one batch: the resolver's decisions, in the open.

- ``linked``: the batch's identities the user holds after it, new links and ones it
  already held alike, in the strategy's priority order; never a blocked value nor a unique
  value another user owns.
- ``skipped``: ``(identity, reason)`` for each identity the resolver set aside, with the
  reason: ``"blocked value"`` (neither matched nor linked), ``"owned by another user"`` (a
  unique value left with its owner: not linked), ``"linked to too many users"`` (not used
  for matching; still linked to the batch's user, so it is in ``linked`` too).
- ``merged``: the users folded into the batch's user (the anonymous user of a login).
- ``created``: whether the user is new (derived or adopted MPID).

No production code reads these fields today; the stage also appends to ``merged`` (IDSync
records' merges) and ``skipped`` (identity change events).
"""

from __future__ import annotations

from patchbay.backends.abstract import Backend
from patchbay.resolve.identities import Identity
from patchbay.resolve.strategy import IdentityStrategy
from tests.resolve.resolver_desk import IDFA_2, Desk, cid, email, idfa, other

BLOCKED = "blocked value"
OWNED = "owned by another user"
TOO_MANY = "linked to too many users"


def test_new_user_links_every_identity_in_priority_order(backend: Backend) -> None:
    desk = Desk(backend.state)
    found = desk.resolve(idfa(), other("o1"), email("a@x.io"), cid("c1"))
    assert found.created
    assert found.linked == [cid("c1"), email("a@x.io"), other("o1"), idfa()]
    assert (found.skipped, found.merged) == ([], [])
    assert {(r.type, r.value) for r in desk.profile(found.mpid).identities} == set(found.linked)


def test_known_user_reports_held_and_new_identities_as_linked(backend: Backend) -> None:
    desk = Desk(backend.state)
    user = desk.resolve(cid("c1")).mpid
    found = desk.resolve(cid("c1"), email("a@x.io"))
    assert (found.mpid, found.created) == (user, False)
    assert found.linked == [cid("c1"), email("a@x.io")]


def test_duplicate_identities_are_reported_once(backend: Backend) -> None:
    found = Desk(backend.state).resolve(cid("c1"), cid("c1"), idfa(), idfa())
    assert found.linked == [cid("c1"), idfa()]


def test_blocked_values_are_skipped_and_not_linked(backend: Backend) -> None:
    desk = Desk(backend.state, IdentityStrategy(blocked_values=("null", "test@example.com")))
    found = desk.resolve(cid("NULL "), email("test@example.com"), idfa())
    assert found.linked == [idfa()]
    assert found.skipped == [(cid("NULL "), BLOCKED), (email("test@example.com"), BLOCKED)]
    assert desk.profile(found.mpid).user_identities() == []


def test_unique_identity_of_another_user_is_skipped_as_owned(backend: Backend) -> None:
    """The higher-priority customer id decides; the email stays with its owner."""
    desk = Desk(backend.state)
    by_customer = desk.resolve(cid("c1")).mpid
    by_email = desk.resolve(email("e@x.io")).mpid
    found = desk.resolve(cid("c1"), email("e@x.io"))
    assert found.mpid == by_customer
    assert found.linked == [cid("c1")]
    assert found.skipped == [(email("e@x.io"), OWNED)]
    assert desk.users_with(email("e@x.io")) == [by_email]


def test_over_linked_identity_is_skipped_for_matching_but_linked(backend: Backend) -> None:
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=1))
    desk.resolve(cid("c1"), idfa(), mpid=1)
    desk.resolve(cid("c2"), idfa(), mpid=2)
    found = desk.resolve(idfa(), Identity("android_uuid", "u1"))
    assert found.created
    assert found.skipped == [(idfa(), TOO_MANY)]
    assert found.linked == [idfa(), Identity("android_uuid", "u1")]
    assert desk.users_with(idfa()) == [1, 2, found.mpid]


def test_login_reports_the_merged_anonymous_user(backend: Backend) -> None:
    desk = Desk(backend.state)
    known = desk.resolve(cid("c1"), idfa(IDFA_2)).mpid
    anon = desk.resolve(idfa()).mpid
    found = desk.resolve(cid("c1"), idfa())
    assert (found.mpid, found.created, found.merged) == (known, False, [anon])
    assert [(m.from_mpid, m.to_mpid, m.reason) for m in desk.merges(anon)] == [
        (anon, known, "login")
    ]
    assert desk.profile(anon).merged_into == known


def test_no_merge_reports_nothing_merged(backend: Backend) -> None:
    desk = Desk(backend.state)
    alice = desk.resolve(cid("alice"), idfa()).mpid
    desk.resolve(cid("bob"), idfa())
    assert desk.resolve(cid("alice"), idfa()).merged == []
    assert desk.resolve(cid("alice")).mpid == alice
    separate = Desk(backend.state, IdentityStrategy(login="separate"))
    assert separate.resolve(cid("c1"), idfa()).merged == []


def test_explicit_mpid_is_created_when_unknown_and_kept_when_known(backend: Backend) -> None:
    desk = Desk(backend.state)
    adopted = desk.resolve(cid("c1"), mpid=42)
    assert (adopted.mpid, adopted.created, adopted.linked) == (42, True, [cid("c1")])
    again = desk.resolve(email("a@x.io"), mpid=42)
    assert (again.mpid, again.created, again.linked) == (42, False, [email("a@x.io")])


def test_explicit_mpid_does_not_take_a_unique_identity_from_its_owner(backend: Backend) -> None:
    desk = Desk(backend.state)
    owner = desk.resolve(cid("c1")).mpid
    found = desk.resolve(cid("c1"), idfa(), mpid=42)
    assert (found.mpid, found.linked, found.skipped) == (42, [idfa()], [(cid("c1"), OWNED)])
    assert desk.users_with(cid("c1")) == [owner]
