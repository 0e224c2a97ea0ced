"""Secrets at rest (Fernet) and API token hashing (C6: never stored or returned in clear)."""

from __future__ import annotations

import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Encrypts and decrypts small secrets such as IMAP passwords with the configured Fernet key."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted with the configured key") from exc


def new_api_token() -> str:
    """A bearer token with 256 bits of randomness."""
    return "ilg_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens are high-entropy, so a plain SHA-256 is a sufficient one-way digest for lookup."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_intake_token() -> str:
    """The unguessable local part of an intake address: 160 bits, lowercase base32."""
    import base64

    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()
