"""Reading a request body: its declared type, the size limit (gzip included), repeated keys.

Every API that takes a body reads it here. :func:`read_json` is the whole of it for a JSON
API: a ``Content-Type`` that is not JSON is a 415, a body over the limit a 413 (before it is
read, also when compressed or chunked), an unknown ``Content-Encoding`` a 415, and a key
that an object of the document repeats a 400 naming the key's JSON path (decoders would keep
the last one silently, and another reader of the same bytes might keep the first).

JSON is ``application/json`` with any parameters (``; charset=utf-8``), any
``application/*+json``, and a request with no ``Content-Type`` at all: the official SDKs
send ``application/json``, but plain HTTP clients (``urllib``, ``http.client``) send none,
and a body without a declared type is read as what the route takes.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from starlette.requests import Request

from patchbay.errors import PatchbayError
from patchbay.http.json_keys import duplicate_key

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@dataclass(eq=False)  # not frozen: contextlib and add_note() set attributes on exceptions
class BodyError(PatchbayError):
    """A body that cannot be read: the HTTP status, an error code, a message, and the reason
    counted in ``patchbay_rejects``."""

    status: int
    code: str
    message: str
    reason: str = "bad_request"


def _too_large(limit: int) -> BodyError:
    return BodyError(
        413, "REQUEST_TOO_LARGE", f"$: the body is over the limit of {limit} bytes", "too_large"
    )


def media_type(content_type: str | None) -> str | None:
    """The media type of a ``Content-Type`` header, lower case and without parameters
    (``None`` without one)."""
    kind = (content_type or "").partition(";")[0].strip().lower()
    return kind or None


def is_json(kind: str | None) -> bool:
    """Whether a body of media type ``kind`` (``None``: undeclared) is read as JSON."""
    if kind is None or kind == JSON:
        return True
    return kind.startswith("application/") and kind.endswith("+json")


def check_media_type(content_type: str | None, others: Collection[str] = ()) -> str | None:
    """The media type of ``content_type`` if it is JSON or one of ``others``; else a 415."""
    kind = media_type(content_type)
    if is_json(kind) or kind in others:
        return kind
    accepted = " or ".join([JSON, *others])
    raise BodyError(
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        f"$: unsupported Content-Type {kind!r}: send {accepted}",
        "unsupported_media_type",
    )


def check_unique_keys(body: bytes) -> None:
    """A 400 naming the first key that an object of the JSON ``body`` repeats."""
    path = duplicate_key(body)
    if path is not None:
        raise BodyError(400, "BAD_REQUEST", f"{path}: duplicate key")


async def read_json(request: Request, limit: int, others: Collection[str] = ()) -> bytes:
    """The body of a route that takes JSON (or a media type of ``others``, returned as read):
    415, 413, 400 as the module documentation says."""
    kind = check_media_type(request.headers.get("content-type"), others)
    body = await read_body(
        request.stream(),
        request.headers.get("content-length"),
        request.headers.get("content-encoding"),
        limit,
    )
    if is_json(kind):
        check_unique_keys(body)
    return body


async def read_body(
    chunks: AsyncIterator[bytes],
    content_length: str | None,
    content_encoding: str | None,
    limit: int,
) -> bytes:
    """The body, decompressed; at most ``limit`` bytes before and after decompression."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise BodyError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"$: unsupported Content-Encoding {encoding!r}: use gzip",
            "unsupported_encoding",
        )
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BodyError(400, "BAD_REQUEST", "$: invalid Content-Length") from None
        if declared > limit:
            raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    body = b"".join(parts)
    if encoding == "identity":
        return body
    return gunzip(body, limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than ``limit`` bytes."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, "BAD_REQUEST", f"$: invalid gzip data: {exc}") from None
    if len(out) > limit:
        raise BodyError(
            413,
            "REQUEST_TOO_LARGE",
            f"$: the decompressed body is over the limit of {limit} bytes",
            "too_large",
        )
    if not decompressor.eof:
        raise BodyError(400, "BAD_REQUEST", "$: the gzip data is cut short")
    if decompressor.unused_data:
        raise BodyError(400, "BAD_REQUEST", "$: data after the end of the gzip stream")
    return out
