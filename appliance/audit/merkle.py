"""Merkle proofs over the audit log's leaves, as RFC 9162 §2.1.3.1 and §2.1.4.1 define them.

Hashing and proof verification live in ``standalone_verify`` so that an auditor
can check everything with that one file; this module builds the proofs that
an export ships. Perfect subtrees are hashed once, level by level, so a proof
costs O(log² n) lookups after an O(n) build.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.audit.standalone_verify import EMPTY_ROOT, node_hash


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """A static tree over a list of leaf hashes, answering roots and proofs of any prefix."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self.levels.append(level)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]), for ranges that RFC 9162's recursion produces."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            height = n.bit_length() - 1
            return self.levels[height][lo >> height]
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        return self.subtree(0, self.size if size is None else self._check(size))

    def _check(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size])."""
        self._check(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of size {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return self._path(m, lo, lo + k) + [self.subtree(lo + k, hi)]
        return self._path(m - k, lo + k, hi) + [self.subtree(lo, lo + k)]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """PROOF(first, D[0:second]); empty when first is 0 or equal to second."""
        self._check(second)
        if not 0 <= first <= second:
            raise ValueError(f"no consistency proof from size {first} to {second}")
        if first == 0 or first == second:
            return []
        return self._subproof(first, 0, second, True)

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [self.subtree(lo, hi)]
        k = _split(n)
        if m <= k:
            return self._subproof(m, lo, lo + k, whole) + [self.subtree(lo + k, hi)]
        return self._subproof(m - k, lo + k, hi, False) + [self.subtree(lo, lo + k)]
