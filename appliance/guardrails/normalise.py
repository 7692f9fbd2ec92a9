"""Text as the checks read it: Unicode folded, invisible characters gone, look-alikes mapped.

An attacker hides a phrase from a pattern by writing it in full-width letters, with
Cyrillic or Greek look-alikes (``іgnоre`` with a Cyrillic і and о), or with zero-width
characters between its letters. ``normalise`` undoes these before any check reads the text:
NFKC (full-width and compatibility forms become plain letters), the removal of format
characters (Unicode category Cf: zero-width space and joiners, the BOM, bidirectional
controls) and soft hyphens, a small table of Cyrillic and Greek letters that look like Latin
ones, case folding and collapsed whitespace. The result is for checking only; the text
that goes to the model is the caller's.
"""

from __future__ import annotations

import unicodedata

# Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables, the common part).
_CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "һ": "h", "ү": "y", "ո": "n",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c",
}
# Format characters (Unicode category Cf: zero-width space and joiners, bidirectional
# controls, the BOM, tag characters...) and fillers that draw nothing: removed.
_CF_RANGES = ((0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
              (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
              (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
              (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
              (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
              (0xE0020, 0xE007F), (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5),
              (0x3164, 0x3164))
_INVISIBLE: dict[int, None] = {c: None for lo, hi in _CF_RANGES for c in range(lo, hi + 1)}


def _fold_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {ord(k): v for k, v in _CONFUSABLES.items()}
    table.update({ord(k.upper()): v for k, v in _CONFUSABLES.items() if k.upper() != k})
    table.update(_INVISIBLE)
    return table


_TABLE = _fold_table()


def normalise(text: str) -> str:
    """The text the checks read: NFKC, no format characters, look-alikes mapped to Latin,
    case-folded, runs of whitespace as one space."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_TABLE)
    # split() and join: the runs of whitespace as one space, several times faster than a
    # regular expression's sub.
    return " ".join(text.casefold().split())


def changed_by_normalising(text: str, normalised: str | None = None) -> bool:
    """Did folding do more than change case and spacing? (Hidden characters, look-alikes.)
    ``normalised`` is ``normalise(text)`` when the caller has it already."""
    if text.isascii():
        return False
    return (normalise(text) if normalised is None else normalised) != " ".join(
        text.casefold().split())
