"""Where a partner (a module) is reached: an HTTPS endpoint or an AWS Lambda function.

Plain msgspec structs with no dependency beyond msgspec (and the pure URL masking of
:mod:`patchbay.activate.targets`), so that the storage layer can hold
a module's target without importing a transport. :data:`Target` is a tagged union: encoded,
a target carries ``"transport": "http"`` or ``"transport": "lambda"`` (its
:attr:`~HttpTarget.transport`).
"""

from __future__ import annotations

from typing import Final, Literal, cast

import msgspec

from patchbay.activate.targets import mask_url

__all__ = ["DEFAULT_LAMBDA_REGION", "HttpTarget", "LambdaTarget", "Target", "TransportName"]

#: mParticle's Lambda integrations live in us-east-1 (spec §5.1).
DEFAULT_LAMBDA_REGION: Final = "us-east-1"


#: How a partner is reached: the tag of its :data:`Target`.
TransportName = Literal["http", "lambda"]


class _Target(msgspec.Struct, frozen=True, tag_field="transport"):
    @property
    def transport(self) -> TransportName:
        """``"http"`` or ``"lambda"``: the target's tag."""
        return cast(TransportName, self.__struct_config__.tag)


class HttpTarget(_Target, frozen=True, tag="http"):
    """A partner's HTTPS endpoint and the token sent as ``Authorization: Token <token>``
    (kept out of ``repr``)."""

    url: str
    token: str | None = None

    def describe(self) -> str:
        """The endpoint, for messages (never the token; a password or a token-like query
        parameter in the URL is masked)."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        token = "<set>" if self.token else None
        return f"HttpTarget(url={mask_url(self.url)!r}, token={token})"


class LambdaTarget(_Target, frozen=True, tag="lambda"):
    """A partner's AWS Lambda function (name, ARN or ``name:alias``)."""

    function: str
    region: str = DEFAULT_LAMBDA_REGION
    endpoint_url: str | None = None

    def describe(self) -> str:
        """The function, for messages."""
        where = f" at {mask_url(self.endpoint_url)}" if self.endpoint_url else ""
        return f"lambda:{self.function} ({self.region}){where}"


#: Where a partner is reached.
Target = HttpTarget | LambdaTarget
