"""Password hashing with Argon2id at OWASP's minimum or above (m = 19 MiB, t = 2, p = 1).

The stored form is PHC-like and names its parameters, so they can be raised
later while old hashes still verify:
``$argon2id$v=19$m=19456,t=2,p=1$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import base64
import hmac
import os
import re

from appliance.errors import BadInput

MEMORY_KIB = 19 * 1024
ITERATIONS = 2
LANES = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_LENGTH = 12
MAX_LENGTH = 1024

_STORED = re.compile(
    r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, memory: int, iterations: int, lanes: int) -> bytes:
    # cryptography is imported when a password is hashed, not by every command that lists users
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    kdf = Argon2id(salt=salt, length=HASH_BYTES, iterations=iterations, lanes=lanes,
                   memory_cost=memory)
    return kdf.derive(password.encode("utf-8"))


def check_password_policy(password: str) -> None:
    """ASVS 2.1: at least 12 characters, at most 1024, anything else allowed."""
    if len(password) < MIN_LENGTH:
        raise BadInput(f"password: at least {MIN_LENGTH} characters are needed")
    if len(password) > MAX_LENGTH:
        raise BadInput(f"password: at most {MAX_LENGTH} characters are allowed")


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = _derive(password, salt, MEMORY_KIB, ITERATIONS, LANES)
    return (f"$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={LANES}"
            f"${_b64(salt)}${_b64(digest)}")


def verify_password(stored: str, password: str) -> bool:
    """Constant-time comparison of the derived hash; False for a malformed stored hash."""
    match = _STORED.fullmatch(stored)
    if match is None:
        return False
    memory, iterations, lanes = (int(match.group(i)) for i in (1, 2, 3))
    expected = _unb64(match.group(5))
    actual = _derive(password, _unb64(match.group(4)), memory, iterations, lanes)
    return hmac.compare_digest(actual, expected)


# Verified against when the user does not exist, so that a login takes as long either way.
DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43
