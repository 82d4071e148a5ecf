"""Data subject requests (OpenDSR): the subject's identities."""

from __future__ import annotations

from typing import Annotated

from patchbay.firehose._base import FirehoseStruct, one_of
from patchbay.firehose.enums import OpenDsrIdentityEncoding, OpenDsrIdentityType


class OpenDsrIdentity(FirehoseStruct):
    """One identity of the data subject; the map key in ``subject_identities`` is its type
    (one of :class:`~.enums.OpenDsrIdentityType`). Only the ``raw`` encoding exists."""

    encoding: Annotated[str, one_of(OpenDsrIdentityEncoding)] | None = None
    value: str | None = None


#: The key type of ``subject_identities``.
OpenDsrIdentityKey = Annotated[str, one_of(OpenDsrIdentityType)]
