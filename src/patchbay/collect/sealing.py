"""Sealing secrets: what IDSync needs to check an HMAC signature, never stored in clear.

The mobile SDKs sign IDSync requests with ``HMAC-SHA256(secret, ...)``, so checking a
signature needs the secret itself, not the SHA-256 hash that HTTP Basic is checked against.
Each client input's secret is therefore also kept *sealed*: encrypted with AES-256-GCM under
the server's credentials key, a random 256-bit key in a file of its own
(``credentials_key_file``, by default ``credentials.key`` in the data directory, mode 0600).
The credential's API key is the associated data, so a sealed secret only opens for the key it
was sealed for. A copy of the database without the key file reveals no secret.

Sealed form: ``aesgcm1:`` + urlsafe base64 of a 12-byte random nonce and the ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from patchbay.errors import PatchbayError
from patchbay.settings import Settings

#: The prefix of a sealed secret (the version of the format).
PREFIX = "aesgcm1:"
#: The name of the key file in the data directory when ``credentials_key_file`` is not set.
KEY_FILE_NAME = "credentials.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class SealingError(PatchbayError):
    """The credentials key file cannot be read or created, or holds no valid key."""


class SecretBox:
    """Seals and opens secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise SealingError(f"a credentials key has {_KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, secret: str, key: str) -> str:
        """``secret`` encrypted for the credential whose API key is ``key``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), key.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, key: str) -> str | None:
        """The secret that :meth:`seal` sealed for ``key``; ``None`` if ``sealed`` was not
        sealed with this box's key for this API key, or is damaged."""
        if not sealed.startswith(PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(PREFIX) :].encode())
            if len(raw) <= _NONCE_BYTES:
                return None
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], key.encode())
            return plain.decode()
        except (InvalidTag, binascii.Error, ValueError):
            return None

    def __repr__(self) -> str:
        return "SecretBox(***)"


def key_file(settings: Settings) -> Path:
    """Where the credentials key of these settings is kept."""
    return settings.credentials_key_file or settings.data_dir / KEY_FILE_NAME


def load_box(path: Path) -> SecretBox:
    """The box of the key in ``path``; a new random key is written there (mode 0600) if the
    file does not exist yet. Raises :class:`SealingError` naming the file if it cannot be read
    or created, or does not hold a key."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        text = _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SealingError(f"{path}: cannot read the credentials key: {exc}") from None
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != _KEY_BYTES:
        raise SealingError(
            f"{path}: not a credentials key (expected {_KEY_BYTES} bytes in base64); restore"
            " the original file: without it no sealed secret opens"
        )
    return SecretBox(key)


def _create(path: Path) -> str:
    """Write a new key to ``path`` whole: to a file of its own first, then linked in place,
    so that a process starting at the same time reads either no file or the whole key."""
    text = base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode() + "\n"
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(partial, path)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_text(encoding="ascii")
    except OSError as exc:
        raise SealingError(f"{path}: cannot create the credentials key: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return text


class LazyBox:
    """The box of a key file, loaded (or the key created) when first needed: a server that
    never sees a signature never touches the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._box: SecretBox | None = None
        self._lock = threading.Lock()

    def get(self) -> SecretBox:
        """The box; raises :class:`SealingError` if the key file is unusable."""
        with self._lock:
            if self._box is None:
                self._box = load_box(self.path)
            return self._box
