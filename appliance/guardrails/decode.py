"""Wrappers an attack hides in: base64, hex and rot13, decoded so the checks read the text.

``views(text)`` gives the text's decoded views, each named by how it was found: every
base64 run of 16 characters or more and every hex run of 8 bytes or more that decodes to
mostly printable UTF-8 text, and the whole text under rot13 when that reads more like
words than the text itself does. Decoding is bounded (``MAX_VIEWS`` runs, each at most
``MAX_RUN`` characters), so a request made of base64 costs no more than a few decodes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

MAX_VIEWS = 8
MAX_RUN = 65536
_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}(?:[ :]|\\x)?){8,}")
# Short words that any English sentence is full of: rot13 is worth reading when it has more.
_COMMON = frozenset("the and you your all are to of is in it that for now what ignore "
                    "instructions previous system prompt with this be".split())
_WORDS = re.compile(r"[a-z]+")
_NO_DIGITS = str.maketrans("", "", "0123456789")


# Punctuation that may surround a word: read as spaces before the words are counted.
_PUNCTUATION = str.maketrans(".,;:!?\"'()", " " * 10)
# rot13 of lower-case ASCII as a byte table: bytes.translate runs in C, and UTF-8's bytes
# of other characters (all 0x80 and up) pass unchanged.
_ROT13 = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"nopqrstuvwxyzabcdefghijklm")


def _common_words(text: str) -> int:
    return sum(map(_COMMON.__contains__, text.translate(_PUNCTUATION).split()))


def rot13(lowered: str) -> str:
    """rot13 of a lower-cased text (as ``codecs.encode(lowered, "rot13")``, faster)."""
    return lowered.encode("utf-8").translate(_ROT13).decode("utf-8")


@dataclass(frozen=True)
class View:
    """A decoded form of (part of) the text: ``how`` is base64, hex or rot13."""

    how: str
    text: str
    start: int = 0
    end: int = 0


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 4:
        return None
    good = sum(1 for c in text if c.isprintable() or c in "\n\t\r")
    letters = sum(1 for c in text if c.isalpha())
    if good / len(text) < 0.95 or letters / len(text) < 0.5:
        return None
    return text


def _base64(run: str) -> str | None:
    body = run.rstrip("=")
    if body.isdigit() or body.isalpha() and (body.islower() or body.isupper()):
        return None  # a number or a plain word, not an encoding
    padded = body + "=" * (-len(body) % 4)
    altchars = b"-_" if ("-" in body or "_" in body) else None
    try:
        data = base64.b64decode(padded, altchars=altchars, validate=altchars is None)
    except (binascii.Error, ValueError):
        return None
    return _printable(data)


def _hex(run: str) -> str | None:
    digits = re.sub(r"[ :]|\\x", "", run)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        return None
    return _printable(data)


def views(text: str) -> list[View]:
    """The decoded views of ``text`` (none for ordinary text)."""
    out: list[View] = []
    # Cheap tests first (in C): base64 needs a word of 16 characters, hex 16 digits.
    for word in (w for w in text.split() if len(w) >= 16):
        for m in _B64.finditer(word):
            if len(out) >= MAX_VIEWS:
                break
            decoded = _base64(m.group()[:MAX_RUN])
            if decoded is not None:
                start = text.find(m.group())
                out.append(View("base64", decoded, start, start + len(m.group())))
    if len(text) - len(text.translate(_NO_DIGITS)) >= 16:
        for m in _HEX.finditer(text):
            if len(out) >= MAX_VIEWS:
                break
            decoded = _hex(m.group()[:MAX_RUN])
            if decoded is not None:
                out.append(View("hex", decoded, m.start(), m.end()))
    lowered = text.lower()
    rot = rot13(lowered)
    common = _common_words(rot)
    if common > 1 and common > _common_words(lowered):  # most texts stop at the first test
        out.append(View("rot13", rot, 0, len(text)))
    return out
