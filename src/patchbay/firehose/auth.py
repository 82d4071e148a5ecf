"""Authentication configuration of a registration (tagged on ``type``; only ``oauth2``)."""

from __future__ import annotations

from typing import Annotated

from patchbay.firehose._base import FirehoseStruct, Int32, one_of, struct_tag
from patchbay.firehose.enums import (
    AuthenticationType,
    OAuth2AccessTokenType,
    OAuth2GrantType,
)


class ScopeDetail(FirehoseStruct):
    """One OAuth2 scope the partner asks for (both fields are required by the docs)."""

    name: str | None = None
    description: str | None = None


class AuthenticationConfiguration(FirehoseStruct, tag_field="type"):
    """Base of the authentication kinds."""

    @property
    def type(self) -> AuthenticationType:
        """The ``type`` discriminator."""
        return AuthenticationType(struct_tag(self))


class OAuth2Authentication(AuthenticationConfiguration, tag="oauth2"):
    """``oauth2``: how the platform obtains a token for the customer (SDK 2.7/2.8).
    ``authorization_url`` and ``token_url`` are required by the docs."""

    authorization_url: str | None = None
    refresh_url: str | None = None
    token_url: str | None = None
    grant_type: Annotated[str, one_of(OAuth2GrantType)] | None = None
    default_expires_in: Int32 | None = None
    client_id: str | None = None
    access_token_type: Annotated[str, one_of(OAuth2AccessTokenType)] | None = None
    custom_header_name: str | None = None
    param_client_id_name: str | None = None
    param_secret_name: str | None = None
    scopes: list[ScopeDetail] = []


#: Any authentication configuration, chosen by its ``type``.
Authentication = OAuth2Authentication
