"""Registration settings (tagged on ``type``): what a partner asks the customer to enter.

Their values reach the partner as strings in ``Account.account_settings`` (account and
connection settings) or in ``audience_subscription_settings``. ``visible`` defaults to true
and, like the other Java primitives, is always written.
"""

from __future__ import annotations

from patchbay.firehose._base import FirehoseStruct, Int64, NonEmptyStr, struct_tag
from patchbay.firehose.enums import SettingType


class BaseSetting(FirehoseStruct, tag_field="type"):
    """Fields common to every setting. ``description`` is a tooltip: no markdown or links."""

    id: NonEmptyStr
    name: NonEmptyStr
    description: str | None = None
    visible: bool = True

    @property
    def type(self) -> SettingType:
        """The ``type`` discriminator (of the Firehose types: see :func:`setting_type`)."""
        return SettingType(struct_tag(self))


class TextSetting(BaseSetting, tag="text"):
    """A text setting; ``confidential`` masks the value in the UI."""

    default_value: str | None = None
    required: bool = False
    confidential: bool = False


class IntegerSetting(BaseSetting, tag="integer"):
    """An integer setting."""

    default_value: Int64 | None = None
    min_value: Int64 | None = None
    max_value: Int64 | None = None
    required: bool = False


class FloatSetting(BaseSetting, tag="float"):
    """A floating-point setting."""

    default_value: float | None = None
    min_value: float | None = None
    max_value: float | None = None
    required: bool = False


class BooleanSetting(BaseSetting, tag="boolean"):
    """A boolean setting (a checkbox)."""

    default_value: bool = False
    checked: bool = False


#: Any setting, chosen by its ``type``.
Setting = TextSetting | IntegerSetting | FloatSetting | BooleanSetting


class SelectSetting(BaseSetting, tag="select", kw_only=True):
    """A choice among ``options`` (a drop-down). Not a Firehose type: Patchbay's own, for the
    settings of Web SDK kits (:mod:`patchbay.kits`); a Firehose registration cannot use it."""

    options: list[NonEmptyStr]
    default_value: str | None = None
    required: bool = False


def setting_type(setting: BaseSetting) -> str:
    """The ``type`` of any setting, ``select`` included."""
    return struct_tag(setting)


#: A setting of a Web SDK kit: the Firehose types, or a choice.
KitSetting = TextSetting | IntegerSetting | FloatSetting | BooleanSetting | SelectSetting
