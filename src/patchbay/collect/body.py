"""Reading a request body within the size limit, gzip included."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from patchbay.errors import PatchbayError


@dataclass(eq=False)  # not frozen: contextlib and add_note() set attributes on exceptions
class BodyError(PatchbayError):
    """A body that cannot be read: the HTTP status, an error code and a message."""

    status: int
    code: str
    message: str


def _too_large(limit: int) -> BodyError:
    return BodyError(413, "REQUEST_TOO_LARGE", f"$: the body is over the limit of {limit} bytes")


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
            415, "UNSUPPORTED_MEDIA_TYPE", f"$: unsupported Content-Encoding {encoding!r}: use gzip"
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
            413, "REQUEST_TOO_LARGE", f"$: the decompressed body is over the limit of {limit} bytes"
        )
    if not decompressor.eof:
        raise BodyError(400, "BAD_REQUEST", "$: the gzip data is cut short")
    if decompressor.unused_data:
        raise BodyError(400, "BAD_REQUEST", "$: data after the end of the gzip stream")
    return out
