"""Encryption of the credentials Patchbay stores to call partners, with a key kept apart.

The embedded backend stores, encrypted with :class:`SecretBox`: the modules' tokens, the
settings of outputs (a webhook's bearer token, a module's confidential account settings)
and of connections, and the audience connections (subscription settings and what the
partner answered). The scheme is Fernet (AES-128-CBC and HMAC-SHA256: authenticated, so a
damaged value or a wrong key is detected, never decrypted into garbage).

The key is a file of its own, never in a database: ``secrets.key`` in the data directory by
default, or the file the ``secrets_key_file`` setting names. It is created (mode ``0600``)
the first time a secret is stored; a key file that group or others can read is refused.
Whoever has the databases without the key file learns nothing from them about the secrets;
losing the key file loses the stored secrets (the modules and outputs must be added again),
so back it up apart from the databases.

A stored value is ``pbenc1:`` followed by the Fernet token; a value without that prefix is
plain text from an earlier version, which the stores encrypt when they open
(:meth:`SecretBox.is_sealed` tells them apart).

The same key also seals secrets *bound* to a name (:meth:`SecretBox.seal_bound`): the
secrets of client inputs, which IDSync needs in clear to check the mobile SDKs' HMAC
signatures (HTTP Basic is checked against a hash). Those use AES-256-GCM with a key derived
from the file's key (HKDF-SHA256, so the two schemes never share a key) and the input's API
key as associated data, so a sealed secret opens only for the key it was sealed for:
``aesgcm1:`` + urlsafe base64 of a 12-byte random nonce and the ciphertext.

The payloads of queued deliveries (the Firehose requests waiting in the outbox, with the
account settings they carry) are sealed too (:meth:`SecretBox.seal_payload`): many, and on
the delivery path, so with AES-256-GCM (one pass; Fernet costs ten times as much) bound to
the delivery's id. Each :class:`SecretBox` seals with a key of its own, derived (HKDF) from
the file's key and a random 16-byte salt, and numbers its nonces, so that no nonce is ever
used twice with a key however many deliveries a process seals: ``pbpay1:`` + salt + 12-byte
nonce + ciphertext, in binary.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import os
import secrets
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from patchbay.datadir import FILE_MODE
from patchbay.errors import PatchbayError, StorageFull

#: The key file's name in the data directory (when ``secrets_key_file`` is not set).
KEY_FILE = "secrets.key"
#: What every encrypted value starts with (``1``: Fernet, the key of the key file).
PREFIX = "pbenc1:"
#: What a bound secret starts with (:meth:`SecretBox.seal_bound`).
BOUND_PREFIX = "aesgcm1:"
#: What a sealed delivery payload starts with (:meth:`SecretBox.seal_payload`).
PAYLOAD_PREFIX = b"pbpay1:"
_NONCE_BYTES = 12
_SALT_BYTES = 16
_BOUND_INFO = b"patchbay: secrets bound to an API key (AES-256-GCM)"
_PAYLOAD_INFO = b"patchbay: queued delivery payloads (AES-256-GCM)"
#: How many payload keys (one per sealing process) :meth:`SecretBox.open_payload` keeps.
_PAYLOAD_KEYS = 64


def key_path(data_dir: Path, key_file: Path | None = None) -> Path:
    """The key file: ``key_file`` (the ``secrets_key_file`` setting), else ``secrets.key``
    in ``data_dir``."""
    return key_file if key_file is not None else data_dir / KEY_FILE


class SecretsError(PatchbayError):
    """A stored secret cannot be encrypted or decrypted; the message names the key file."""


class SecretBox:
    """Encrypts and decrypts stored secrets with the key in ``key_file`` (read, or created,
    on first use; thread-safe)."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._fernet: Fernet | None = None
        self._aead: AESGCM | None = None
        self._material: bytes | None = None
        self._sealing: tuple[bytes, AESGCM] | None = None
        self._opening: dict[bytes, AESGCM] = {}
        self._nonces = itertools.count(1)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretBox({str(self.key_file)!r})"

    @staticmethod
    def is_sealed(value: str) -> bool:
        """Whether ``value`` is encrypted (else plain text from an earlier version)."""
        return value.startswith(PREFIX)

    def seal(self, plain: str) -> str:
        """``plain`` encrypted (creating the key file if there is none yet)."""
        return self.seal_bytes(plain.encode("utf-8"))

    def seal_bytes(self, plain: bytes) -> str:
        """``plain`` encrypted, as text (creating the key file if there is none yet)."""
        return PREFIX + self._key(create=True).encrypt(plain).decode("ascii")

    def open(self, stored: str) -> str:
        """The plain text of ``stored`` (a plain-text value is returned as it is)."""
        if not self.is_sealed(stored):
            return stored
        try:
            return self.open_bytes(stored).decode("utf-8")
        except UnicodeDecodeError:
            raise self._undecryptable() from None

    def open_bytes(self, stored: str) -> bytes:
        """What :meth:`seal_bytes` encrypted into ``stored``."""
        try:
            return self._key(create=False).decrypt(stored.removeprefix(PREFIX))
        except InvalidToken:
            raise self._undecryptable() from None

    def seal_bound(self, secret: str, bound_to: str) -> str:
        """``secret`` sealed so that it opens only with ``bound_to`` (creating the key file
        if there is none yet)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._bound(create=True).encrypt(nonce, secret.encode(), bound_to.encode())
        return BOUND_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open_bound(self, sealed: str, bound_to: str) -> str | None:
        """The secret :meth:`seal_bound` sealed for ``bound_to``; ``None`` if ``sealed`` was
        not sealed with this key for that name, or is damaged. Raises :class:`SecretsError`
        if the key file is missing or unusable."""
        aead = self._bound(create=False)
        if not sealed.startswith(BOUND_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(BOUND_PREFIX) :].encode())
            if len(raw) <= _NONCE_BYTES:
                return None
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to.encode())
            return plain.decode()
        except (InvalidTag, binascii.Error, ValueError):
            return None

    @staticmethod
    def is_sealed_payload(stored: bytes) -> bool:
        """Whether ``stored`` is a sealed payload (else plain, from an earlier version)."""
        return stored.startswith(PAYLOAD_PREFIX)

    def seal_payload(self, plain: bytes, bound_to: str) -> bytes:
        """``plain`` sealed so that it opens only with ``bound_to`` (creating the key file if
        there is none yet)."""
        salt, aead = self._payload_sealer()
        # itertools.count is atomic: threads never get the same nonce
        nonce = next(self._nonces).to_bytes(_NONCE_BYTES, "big")
        return PAYLOAD_PREFIX + salt + nonce + aead.encrypt(nonce, plain, bound_to.encode())

    def open_payload(self, stored: bytes, bound_to: str) -> bytes:
        """What :meth:`seal_payload` sealed into ``stored`` for ``bound_to`` (a plain
        payload is returned as it is); raises :class:`SecretsError` if it does not open."""
        if not self.is_sealed_payload(stored):
            return stored
        start = len(PAYLOAD_PREFIX)
        salt = stored[start : start + _SALT_BYTES]
        nonce = stored[start + _SALT_BYTES : start + _SALT_BYTES + _NONCE_BYTES]
        try:
            return self._payload_opener(salt).decrypt(
                nonce, stored[start + _SALT_BYTES + _NONCE_BYTES :], bound_to.encode()
            )
        except (InvalidTag, ValueError):
            raise self._undecryptable() from None

    def _payload_sealer(self) -> tuple[bytes, AESGCM]:
        sealing = self._sealing
        if sealing is None:
            salt = secrets.token_bytes(_SALT_BYTES)
            sealing = (salt, self._derive(_PAYLOAD_INFO, salt, create=True))
            with self._lock:
                if self._sealing is None:
                    self._sealing = sealing
                sealing = self._sealing
        return sealing

    def _payload_opener(self, salt: bytes) -> AESGCM:
        aead = self._opening.get(salt)
        if aead is None:
            aead = self._derive(_PAYLOAD_INFO, salt, create=False)
            with self._lock:
                if len(self._opening) >= _PAYLOAD_KEYS:
                    self._opening.clear()
                self._opening[salt] = aead
        return aead

    def _bound(self, create: bool) -> AESGCM:
        if self._aead is None:
            aead = self._derive(_BOUND_INFO, None, create)
            with self._lock:
                if self._aead is None:
                    self._aead = aead
        return self._aead

    def _derive(self, info: bytes, salt: bytes | None, create: bool) -> AESGCM:
        """An AES-256-GCM key derived from the file's key for ``info`` and ``salt``."""
        with self._lock:
            if self._material is None:
                self._material = base64.urlsafe_b64decode(self._read(create))
            material = self._material
        derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info)
        return AESGCM(derive.derive(material))

    def _undecryptable(self) -> SecretsError:
        return SecretsError(
            f"a stored secret cannot be decrypted with the key in {self.key_file}: it is"
            " not the key file that encrypted it (restore that one) or the value is"
            " damaged"
        )

    def _key(self, create: bool) -> Fernet:
        with self._lock:
            if self._fernet is None:
                self._fernet = Fernet(self._read(create))
            return self._fernet

    def _read(self, create: bool) -> bytes:
        path = self.key_file
        try:
            info = path.stat()
        except FileNotFoundError:
            if not create:
                raise SecretsError(
                    f"the key file {path} is missing: the stored secrets were encrypted with"
                    " it; restore it (or set secrets_key_file to where it is)"
                ) from None
            return self._create()
        except OSError as exc:
            raise SecretsError(f"key file {path}: {exc.strerror or exc}") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise SecretsError(
                f"key file {path} can be read by group or others; run: chmod 600 {path}"
            )
        try:
            key = path.read_bytes().strip()
            Fernet(key)
        except OSError as exc:
            raise SecretsError(f"key file {path}: {exc.strerror or exc}") from None
        except ValueError:
            raise SecretsError(f"key file {path} does not hold a key (44 base64 bytes)") from None
        return key

    def _create(self) -> bytes:
        """Write a new key to the key file, atomically: written to a file of its own, then
        linked (another process creating it at the same time: its key is used). No room
        left raises :class:`~patchbay.errors.StorageFull`."""
        path = self.key_file
        key = Fernet.generate_key()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                os.write(fd, key + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temporary, path)
            except FileExistsError:
                return self._read(create=False)
        except OSError as exc:
            if (full := StorageFull.of(exc, path)) is not None:
                raise full from None  # nothing was linked: retried once there is room
            raise SecretsError(
                f"cannot create the key file {path}: {exc.strerror or exc}"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()
        return key
