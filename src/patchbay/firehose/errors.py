"""Exceptions raised by the Firehose models and serializer. All are ``ValueError``s, and
:class:`~patchbay.errors.PatchbayError`s (a module that imports nothing)."""

from __future__ import annotations

from collections.abc import Sequence

from patchbay.errors import PatchbayError


class FirehoseError(PatchbayError, ValueError):
    """Base of every Firehose error."""


class FirehoseDecodeError(FirehoseError):
    """The input is not JSON, or not a JSON object."""


class FirehoseValidationError(FirehoseError):
    """The input is JSON but not a valid message. ``path`` is the JSON path of the bad value
    (``$`` is the message itself, e.g. ``$.events[0].custom_event_type``)."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class UnknownValueError(FirehoseValidationError):
    """A value outside a closed vocabulary: an enum literal or a ``type`` discriminator.

    ``allowed`` lists the accepted literals and ``vocabulary`` names them (an enum class name
    such as ``CustomEventType``, or e.g. ``Event type``).
    """

    def __init__(self, value: object, allowed: Sequence[str], vocabulary: str, path: str) -> None:
        choices = ", ".join(repr(a) for a in allowed)
        super().__init__(
            f"Invalid {vocabulary} value {value!r} at `{path}`: expected one of {choices}",
            path,
        )
        self.value = value
        self.allowed = tuple(allowed)
        self.vocabulary = vocabulary


class UnknownEnumValueError(UnknownValueError):
    """An enum field holds an unknown literal. ``parse(..., lenient=True)`` accepts it."""


class UnknownTypeError(UnknownValueError):
    """A ``type`` discriminator names no known message, event, runtime, notification,
    setting or authentication kind. Rejected in lenient mode too (the Java SDK cannot read it
    either, and there is no model to read it into)."""


class SettingError(FirehoseError):
    """A setting is wrong: missing while required, not of its type, unknown, malformed...

    ``problems`` lists what is wrong, one line each; the message joins them with ``"; "``.
    Raised by the ``Account.get_*_setting`` helpers (one problem), and by the platform when
    the settings of an output or a connection do not match their definitions (every
    problem found).
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
