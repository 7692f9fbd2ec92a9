"""The classifier's features: hashed byte n-grams of the normalised text.

A site that trains its own features-in classifier must compute exactly this
(``FEATURES_ID`` names the recipe, stored in the model's metadata):

1. ``normalise(text)`` (see ``normalise.py``), encoded as UTF-8;
2. for each n in 1..4, every run of n bytes ``b0..b(n-1)`` is hashed in 32-bit unsigned
   arithmetic that wraps: ``h = n``, then ``h = h * 16777619 + b`` for each byte, then
   ``h = h * 2654435761``; its bucket is ``h >> (32 - BITS)``;
3. the bucket counts ``c`` become ``log(1 + c)``, scaled to unit Euclidean length;
4. one row of ``2 ** BITS`` float32 values per text.
"""

from __future__ import annotations

import numpy as np

from appliance.guardrails.normalise import normalise

FEATURES_ID = "appliance.hashed-byte-ngrams/1"
BITS = 14
DIM = 1 << BITS
NGRAMS = (1, 2, 3, 4)
_PRIME = np.uint32(16777619)
_GOLDEN = np.uint32(2654435761)
_SHIFT = np.uint32(32 - BITS)


def buckets(normalised: str) -> np.ndarray:
    """Every n-gram's bucket index (uint32), all n together."""
    b = np.frombuffer(normalised.encode("utf-8"), dtype=np.uint8).astype(np.uint32)
    parts = []
    # The hash of an n-gram extends that of its first n-1 bytes (minus the seed n-1): so
    # carry ``acc`` (the bytes' part) and add each n's seed term, n * PRIME ** n, apart.
    acc = np.zeros(len(b), dtype=np.uint32)
    for n in NGRAMS:
        count = len(b) - n + 1
        if count <= 0:
            break
        acc = acc[:count] * _PRIME + b[n - 1:n - 1 + count]
        seed = np.uint32((n * pow(int(_PRIME), n, 1 << 32)) % (1 << 32))
        parts.append(((acc + seed) * _GOLDEN) >> _SHIFT)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


def vector(normalised: str, out: np.ndarray | None = None) -> np.ndarray:
    """The feature row of one already-normalised text (float32, unit length)."""
    row = np.zeros(DIM, dtype=np.float32) if out is None else out
    nz, values = sparse(normalised)
    row[nz] = values
    return row


def sparse(normalised: str) -> tuple[np.ndarray, np.ndarray]:
    """The feature row of one already-normalised text as (bucket indices, values): the
    non-zero entries of ``vector``, without the row of ``DIM`` zeros."""
    idx = buckets(normalised)
    if not idx.size:
        return idx, np.zeros(0, dtype=np.float32)
    counts = np.bincount(idx, minlength=DIM)
    nz = np.flatnonzero(counts)
    values = np.log1p(counts[nz].astype(np.float32))
    return nz, values / np.float32(np.sqrt(np.dot(values, values)))


def matrix(texts: list[str]) -> np.ndarray:
    """Feature rows of raw texts (normalised here), one per text."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        vector(normalise(text), out[i])
    return out
