"""The ``account`` object of platform-to-partner requests, and ``platform_fields``."""

from __future__ import annotations

from patchbay.firehose._base import FirehoseStruct, Int32
from patchbay.firehose.errors import SettingError


class Account(FirehoseStruct):
    """The customer's subscription: its id and the values of the partner's account settings.

    Setting values are strings (the platform has sent booleans as ``"True"``) and may be
    ``null``. Connection-level setting values arrive merged into ``account_settings``.
    The ``get_*_setting`` helpers mirror the Java ``Account`` getters.
    """

    account_id: Int32 = 0
    account_settings: dict[str, str | None] = {}

    def _raw_setting(self, name: str, required: bool) -> str | None:
        value = self.account_settings.get(name)
        if value is None and required:
            raise SettingError(f"The required setting {name!r} is not provided.")
        return value

    def get_string_setting(
        self, name: str, required: bool = False, default: str | None = None
    ) -> str | None:
        """The setting's value; ``default`` when missing or null (an error if ``required``)."""
        value = self._raw_setting(name, required)
        return default if value is None else value

    def get_int_setting(
        self, name: str, required: bool = False, default: int | None = None
    ) -> int | None:
        """The setting parsed as an integer (``SettingError`` if it is not one)."""
        value = self._raw_setting(name, required)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise SettingError(f"The setting {name!r} is not an integer: {value!r}") from None

    def get_float_setting(
        self, name: str, required: bool = False, default: float | None = None
    ) -> float | None:
        """The setting parsed as a float (``SettingError`` if it is not one)."""
        value = self._raw_setting(name, required)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise SettingError(f"The setting {name!r} is not a number: {value!r}") from None

    def get_bool_setting(
        self, name: str, required: bool = False, default: bool | None = None
    ) -> bool | None:
        """The setting as a boolean: ``true`` in any case is True, anything else False
        (Java's ``Boolean.parseBoolean``; the platform sends ``"True"``)."""
        value = self._raw_setting(name, required)
        if value is None:
            return default
        return value.lower() == "true"


class PlatformFields(FirehoseStruct):
    """Platform metadata of an event batch (SDK 3.2.0; needs ``allow_platform_fields``)."""

    mp_account_id: Int32 = 0
    mp_account_name: str | None = None
    workspace_id: Int32 = 0
    workspace_name: str | None = None
    input_name: str | None = None
    app_name: str | None = None
    app_version: str | None = None
    dataplan_id: str | None = None
    dataplan_name: str | None = None
    dataplan_version: Int32 | None = None
