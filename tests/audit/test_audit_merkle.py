"""RFC 9162 hashing and proofs against the Certificate Transparency / transparency-dev vectors,
and C2SP signed notes against the golang.org/x/mod/sumdb/note example."""

from __future__ import annotations

import base64
import random

import pytest

from appliance.audit.keys import Signer
from appliance.audit.merkle import MerkleTree
from appliance.audit.standalone_verify import (
    EMPTY_ROOT,
    CompactRange,
    FormatError,
    NoteVerifier,
    b64decode_strict,
    leaf_hash,
    open_checkpoint,
    parse_note,
    verify_consistency,
    verify_inclusion,
)

# The eight leaves of the CT / transparency-dev test tree (merkle/testonly).
LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
          bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (leaf index, tree size, proof)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (size1, size2, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
HASHES = [leaf_hash(x) for x in LEAVES]
TREE = MerkleTree(HASHES)


def _h(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in items]


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert CompactRange().root() == EMPTY_ROOT == MerkleTree([]).root()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_vectors(size: int) -> None:
    cr = CompactRange()
    for h in HASHES[:size]:
        cr.append(h)
    assert cr.root().hex() == ROOTS[size - 1]
    assert TREE.root(size).hex() == ROOTS[size - 1]


@pytest.mark.parametrize("index,size,proof", INCLUSION)
def test_inclusion_proofs_match_the_vectors(index: int, size: int, proof: list[str]) -> None:
    assert TREE.inclusion_proof(index, size) == _h(proof)
    root = bytes.fromhex(ROOTS[size - 1])
    assert verify_inclusion(HASHES[index], index, size, _h(proof), root)
    # The corruptions transparency-dev's verify_test.go tries: each must fail.
    assert not verify_inclusion(HASHES[index], index, size, _h(proof), bytes(32))
    assert not verify_inclusion(HASHES[index], index + 1, size, _h(proof), root)
    assert not verify_inclusion(HASHES[index], index, size * 2, _h(proof), root)
    assert not verify_inclusion(HASHES[index], index, size, _h(proof) + [bytes(32)], root)
    if proof:
        assert not verify_inclusion(HASHES[index], index, size, _h(proof)[:-1], root)
        bad = _h(proof)
        bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
        assert not verify_inclusion(HASHES[index], index, size, bad, root)


@pytest.mark.parametrize("size1,size2,proof", CONSISTENCY)
def test_consistency_proofs_match_the_vectors(size1: int, size2: int, proof: list[str]) -> None:
    assert TREE.consistency_proof(size1, size2) == _h(proof)
    r1, r2 = bytes.fromhex(ROOTS[size1 - 1]), bytes.fromhex(ROOTS[size2 - 1])
    assert verify_consistency(size1, size2, _h(proof), r1, r2)
    assert not verify_consistency(size1, size2, _h(proof), r2 if r1 != r2 else bytes(32), r2)
    assert not verify_consistency(size1, size2, _h(proof), r1, bytes(32))
    assert not verify_consistency(size1, size2, _h(proof) + [bytes(32)], r1, r2)
    if proof:
        assert not verify_consistency(size1, size2, _h(proof)[:-1], r1, r2)
        assert not verify_consistency(size1 + 1, size2, _h(proof), r1, r2)


def test_every_proof_of_a_random_tree_verifies() -> None:
    rng = random.Random(7)
    leaves = [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(70)]
    tree = MerkleTree(leaves)
    for size in range(1, 71):
        root = tree.root(size)
        assert root == CompactRange_of(leaves[:size])
        for index in range(size):
            assert verify_inclusion(leaves[index], index, size, tree.inclusion_proof(index, size), root)
        for first in range(1, size + 1):
            proof = tree.consistency_proof(first, size)
            assert verify_consistency(first, size, proof, tree.root(first), root)


def CompactRange_of(leaves: list[bytes]) -> bytes:
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    return cr.root()


# golang.org/x/mod/sumdb/note's example key and signed note.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_signed_note_vector_verifies() -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    assert verifier.id.hex() == "c74f20a3"
    assert verifier.vkey == PETER_VKEY
    body, sigs = parse_note(PETER_NOTE)
    assert body.startswith("If you think") and len(sigs) == 1
    assert verifier.verify(body.encode(), sigs[0].signature)
    assert not verifier.verify(body.replace("answer", "Answer").encode(), sigs[0].signature)


def test_checkpoint_round_trip_and_strict_parsing() -> None:
    signer = Signer.generate("example.org/log")
    root = base64.b64encode(bytes(range(32))).decode()
    note = signer.sign_note(f"example.org/log\n5\n{root}\n")
    cp = open_checkpoint(note, signer.verifier)
    assert (cp.origin, cp.size, cp.root) == ("example.org/log", 5, bytes(range(32)))
    sig_line = note.splitlines()[-1]
    last = sig_line[-2]  # the base64 digit before "=" holds two unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    flipped = alphabet[alphabet.index(last) ^ 1]
    bad_notes = [
        note.replace("\n5\n", "\n05\n"),                       # leading zero
        note.replace("\n5\n", "\n+5\n"),
        note.rstrip("\n"),                                     # no final newline
        note.replace("\n\n", "\n\n\n"),                        # extra blank line
        note.replace("\u2014 ", "- "),                         # not an em dash
        note[:-3] + flipped + "=\n",                           # non-canonical base64
        note.replace(f"\n{root}\n", f"\n{root}\nextension\n"),  # extension line
        note + f"\u2014 other {sig_line.split(' ')[2]}\n",     # a second signature
        note.replace("example.org/log\n5", "example.org/log \n5"),
    ]
    for bad in bad_notes:
        assert bad != note
        with pytest.raises(FormatError):
            open_checkpoint(bad, signer.verifier)
    with pytest.raises(FormatError):
        open_checkpoint(note, Signer.generate("example.org/log").verifier)
    with pytest.raises(FormatError):
        b64decode_strict("QQ=", "x")
    with pytest.raises(FormatError):
        NoteVerifier.from_vkey(PETER_VKEY.replace("c74f20a3", "c74f20a4"))
