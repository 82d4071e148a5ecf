"""Where a partner (a module) is reached: an HTTPS endpoint or an AWS Lambda function.

Plain msgspec structs with no dependency beyond msgspec, and :func:`mask_url`, which shows a
URL with its credentials hidden, so that the storage layer can hold
a module's target without importing a transport. :data:`Target` is a tagged union: encoded,
a target carries ``"transport": "http"`` or ``"transport": "lambda"`` (its
:attr:`~HttpTarget.transport`).
"""

from __future__ import annotations

import re
from typing import Final, Literal, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec

#: What a secret is shown as.
MASK: Final = "***"
#: Query parameters whose values :func:`mask_url` hides.
_SECRET_PARAM: Final = re.compile(
    r"token|secret|passw|pwd|api[-_]?key|apikey|^key$|auth|signature|^sig$|credential|session",
    re.IGNORECASE,
)


def mask_url(url: str) -> str:
    """``url`` fit to show: the password of its user info and the values of token-like query
    parameters (``token``, ``api_key``, ``secret``, ``signature``...) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{hostport}" if sep else f"{user}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_SECRET_PARAM.search(k) for k, _ in pairs):
                query = urlencode(
                    [(k, MASK if _SECRET_PARAM.search(k) and v else v) for k, v in pairs],
                    quote_via=quote,
                    safe="*",
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<an invalid URL>"


__all__ = ["DEFAULT_LAMBDA_REGION", "HttpTarget", "LambdaTarget", "Target", "TransportName"]

#: mParticle's Lambda integrations live in us-east-1.
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
