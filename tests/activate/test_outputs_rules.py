"""Settings validation against a registration, masking, and the connection filters."""

from __future__ import annotations

import msgspec
import pytest

from patchbay.activate.filters import apply_filters, sampled_in
from patchbay.activate.outputs import (
    confidential_values,
    masked,
    output_summary,
    parse_setting_args,
    redacted,
    validate_settings,
)
from patchbay.activate.service import check_filters
from patchbay.backends.records import (
    Connection,
    Filters,
    ModuleDestination,
    Output,
    WebhookDestination,
)
from patchbay.collect.batch import Batch
from patchbay.collect.decode import decode_batch
from patchbay.firehose import EventProcessingRegistration, ModuleRegistrationResponse
from patchbay.firehose.errors import SettingError
from patchbay.firehose.settings import BooleanSetting, IntegerSetting, Setting, TextSetting

DEFINITIONS: list[Setting] = [
    TextSetting(id="apiKey", name="API key", required=True, confidential=True),
    BooleanSetting(id="flag", name="Flag", default_value=True),
    IntegerSetting(id="limit", name="Limit", min_value=0, max_value=100, default_value=20),
]


def test_valid_settings_get_defaults() -> None:
    assert validate_settings(DEFINITIONS, {"apiKey": "k", "limit": " 7"}) == {
        "apiKey": "k",
        "flag": "true",
        "limit": "7",
    }


def test_every_problem_is_reported_without_the_secret() -> None:
    with pytest.raises(SettingError) as caught:
        validate_settings(DEFINITIONS, {"limit": "500", "flag": "maybe", "nope": "1"})
    text = str(caught.value)
    assert "unknown account setting 'nope'" in text
    assert "'apiKey'" in text and "required" in text
    assert "at most 100" in text
    assert "true or false" in text
    assert len(caught.value.problems) == 4 and text == "; ".join(caught.value.problems)


def test_masking() -> None:
    output = Output("o", ModuleDestination("m"), 0, 0, settings={"apiKey": "hunter2", "x": "1"})
    summary = output_summary(output, {"apiKey"})
    assert summary["settings"] == {"apiKey": "***", "x": "1"}
    assert "hunter2" not in msgspec.json.encode(summary).decode()
    assert masked({"a": ""}, {"a"}) == {"a": ""}


def test_confidential_values_are_redacted_from_errors() -> None:
    """The values of the confidential settings of an output and of its connections (a
    webhook: its token) are masked in a partner's answer quoted in an error; others stay."""
    registration = ModuleRegistrationResponse(
        event_processing_registration=EventProcessingRegistration(
            account_settings=DEFINITIONS,
            event_connection_settings=[
                TextSetting(id="secret", name="Secret", confidential=True),
                TextSetting(id="region", name="Region"),
            ],
        )
    )
    output = Output("m", ModuleDestination("demo"), 0, 0, {"apiKey": "key-1", "limit": "20"})
    connection = Connection("c", "i", "m", 0, {"secret": "conn-key-1", "region": "eu"})
    values = confidential_values(output, registration, [connection])
    assert values == ("conn-key-1", "key-1")  # the longest first
    error = "HTTP 401: bad key key-1 (conn-key-1) limit 20 in eu"
    assert redacted(error, values) == "HTTP 401: bad key *** (***) limit 20 in eu"
    hook = Output("h", WebhookDestination("http://x"), 0, 0, {"token": "tok-1"})
    assert confidential_values(hook, None) == ("tok-1",)


def test_setting_args() -> None:
    assert parse_setting_args(["a=b=c", "x="]) == {"a": "b=c", "x": ""}
    with pytest.raises(SettingError):
        parse_setting_args(["novalue"])


def make_batch(**fields: object) -> Batch:
    body = {
        "environment": "production",
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Play",
                    "custom_event_type": "other",
                    "custom_attributes": {"a": "1", "b": "2"},
                },
            },
            {"event_type": "screen_view", "data": {"screen_name": "Home"}},
            {"event_type": "session_start", "data": {}},
        ],
        **fields,
    }
    return decode_batch(msgspec.json.encode(body))


def names(batch: Batch | None) -> list[str]:
    assert batch is not None
    return [type(e).__struct_config__.tag for e in batch.events or []]  # type: ignore[misc]


def test_no_filters_forward_the_batch_unchanged() -> None:
    batch = make_batch()
    assert apply_filters(batch, 1, Filters()) is batch


def test_environment() -> None:
    assert apply_filters(make_batch(), 1, Filters(environment="development")) is None
    assert apply_filters(
        make_batch(environment="development"), 1, Filters(environment="development")
    )
    assert apply_filters(make_batch(environment=None), 1, Filters(environment="production"))


def test_event_types_names_and_attributes() -> None:
    batch = make_batch()
    assert names(apply_filters(batch, 1, Filters(event_types=["screen_view"]))) == ["screen_view"]
    assert names(apply_filters(batch, 1, Filters(event_names_drop=["Play"]))) == [
        "screen_view",
        "session_start",
    ]
    assert names(apply_filters(batch, 1, Filters(event_names_keep=["Home"]))) == ["screen_view"]
    kept = apply_filters(batch, 1, Filters(attributes_drop=["a"]))
    assert kept is not None and kept.events
    assert kept.events[0].data.custom_attributes == {"b": "2"}
    only = apply_filters(batch, 1, Filters(attributes_keep=["a"]))
    assert only is not None and only.events
    assert only.events[0].data.custom_attributes == {"a": "1"}
    assert batch.events and batch.events[0].data.custom_attributes == {"a": "1", "b": "2"}
    assert apply_filters(batch, 1, Filters(event_types=["crash_report"])) is None


def test_consent() -> None:
    consent = {"gdpr": {"Marketing": {"consented": True}, "analytics": {"consented": False}}}
    batch = make_batch(consent_state=consent)
    assert apply_filters(batch, 1, Filters(consent_purposes=["marketing"])) is batch
    assert apply_filters(batch, 1, Filters(consent_purposes=["analytics"])) is None
    assert apply_filters(make_batch(), 1, Filters(consent_purposes=["marketing"])) is None


def test_sampling_is_stable_per_user_and_nested() -> None:
    users = range(1, 5001)
    half = {u for u in users if sampled_in(u, 50)}
    assert 2000 < len(half) < 3000
    assert half == {u for u in users if sampled_in(u, 50)}
    assert {u for u in users if sampled_in(u, 10)} <= half
    assert all(sampled_in(u, 100) for u in users)
    assert not any(sampled_in(u, 0) for u in users)
    batch = make_batch()
    for user in (1, 2, 3, 4):
        forwarded = apply_filters(batch, user, Filters(sample_percent=50)) is not None
        assert forwarded == sampled_in(user, 50)


def test_check_filters() -> None:
    assert check_filters(Filters()) == []
    problems = check_filters(
        Filters(environment="staging", event_types=["nope"], sample_percent=101)
    )
    assert len(problems) == 3
