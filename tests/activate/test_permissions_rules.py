"""The ``required`` identity rule of :func:`patchbay.activate.permissions.meets_required`.

The rule (mapping §4.3, docs/activate.md "Required identities"): with no required permission a
batch is always sent; otherwise at least one *required* identity must be present, across user,
device and partner identities together. A permission that is not required plays no part: its
identity being present does not satisfy the rule, and its place in the list (before a required
one, in the same group or in an earlier group) neither ends the search nor switches the rule off.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest

from patchbay.activate.permissions import meets_required
from patchbay.firehose import (
    DeviceIdentityPermission,
    PartnerIdentityPermission,
    Permissions,
    UserIdentityPermission,
)

ZERO_ID = "00000000-0000-0000-0000-000000000000"

EMAIL = UserIdentityPermission(type="email", encoding="raw")
CUSTOMER_REQUIRED = UserIdentityPermission(type="customer", encoding="sha256", required=True)
IDFV = DeviceIdentityPermission(type="ios_vendor_id", encoding="raw")
IDFA_REQUIRED = DeviceIdentityPermission(type="ios_advertising_id", encoding="md5", required=True)
PID = PartnerIdentityPermission(type="pid", encoding="raw")
PID_REQUIRED = PartnerIdentityPermission(type="pid", encoding="raw", required=True)


def meets(
    permissions: Permissions,
    user: Mapping[str, str] | None = None,
    device: Mapping[str, str] | None = None,
    partner: Mapping[str, str] | None = None,
) -> bool:
    return meets_required(permissions, user or {}, device or {}, partner or {})


# --- a non-required permission listed before a required one, in the same group -----------

USER_FIRST_OPTIONAL = Permissions(user_identities=[EMAIL, CUSTOMER_REQUIRED])


def test_optional_first_does_not_switch_the_rule_off() -> None:
    # Nothing present: the required permission after the optional one still applies.
    assert meets(USER_FIRST_OPTIONAL) is False


def test_optional_identity_present_does_not_satisfy_the_rule() -> None:
    assert meets(USER_FIRST_OPTIONAL, user={"email": "e@example.com"}) is False


def test_required_identity_after_an_optional_one_is_found() -> None:
    assert meets(USER_FIRST_OPTIONAL, user={"customer": "c1"}) is True
    assert meets(USER_FIRST_OPTIONAL, user={"email": "e@example.com", "customer": "c1"}) is True


def test_optional_present_with_the_required_one_blank_or_zero_is_not_enough() -> None:
    assert meets(USER_FIRST_OPTIONAL, user={"email": "e", "customer": "  "}) is False
    device_rule = Permissions(device_identities=[IDFV, IDFA_REQUIRED])
    assert meets(device_rule, device={"ios_vendor_id": "v", "ios_advertising_id": ZERO_ID}) is False
    assert meets(device_rule, device={"ios_vendor_id": "v", "ios_advertising_id": "a"}) is True


# --- a non-required permission in an earlier group than the required one ------------------


def test_optional_in_an_earlier_group_does_not_count() -> None:
    # Groups are checked user, device, partner: the optional user and device identities come
    # before the required partner identity.
    permissions = Permissions(
        user_identities=[EMAIL], device_identities=[IDFV], partner_identities=[PID_REQUIRED]
    )
    everything_but_pid = {
        "user": {"email": "e"},
        "device": {"ios_vendor_id": "v"},
    }
    assert meets(permissions, **everything_but_pid) is False
    assert meets(permissions, **everything_but_pid, partner={"pid": "p"}) is True
    assert meets(permissions, partner={"pid": "p"}) is True


def test_a_required_identity_in_any_group_satisfies_the_rule() -> None:
    permissions = Permissions(
        user_identities=[EMAIL, CUSTOMER_REQUIRED],
        device_identities=[IDFV, IDFA_REQUIRED],
        partner_identities=[PID],
    )
    assert meets(permissions, user={"email": "e"}, partner={"pid": "p"}) is False
    assert meets(permissions, device={"ios_advertising_id": "a"}) is True
    assert meets(permissions, user={"customer": "c"}) is True


# --- the answer does not depend on the order of the permissions ---------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({}, False),
        ({"email": "e"}, False),
        ({"email": "e", "other": "o"}, False),
        ({"customer": "c"}, True),
        ({"email": "e", "customer": "c"}, True),
    ],
)
def test_order_of_permissions_does_not_matter(user: dict[str, str], expected: bool) -> None:
    listed = [EMAIL, UserIdentityPermission(type="other", encoding="md5"), CUSTOMER_REQUIRED]
    for order in itertools.permutations(listed):
        assert meets(Permissions(user_identities=list(order)), user=user) is expected, order


def test_no_required_permission_always_meets_the_rule() -> None:
    permissions = Permissions(
        user_identities=[EMAIL], device_identities=[IDFV], partner_identities=[PID]
    )
    assert meets(permissions) is True
    assert meets(Permissions()) is True
