"""Tampering with the stored log: every mutation is detected, at the right sequence number."""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Callable

import pytest

from appliance.audit import append, service
from appliance.audit.checkpoints import CHECKPOINT_EVERY
from appliance.audit.keys import Signer
from appliance.audit.standalone_verify import (
    NoteVerifier,
    Row,
    canonical_json,
    leaf_hash,
    parse_checkpoint_body,
    parse_note,
    verify_log,
)
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

MUTATIONS = 10_000
Cps = list[tuple[int | None, str]]


def _build(home: Home, db: Database, n: int) -> tuple[list[Row], Cps, NoteVerifier, str]:
    service.ensure_key(home, "local:root")
    rng = random.Random(1)
    while service.checkpoints_size(db) < n:
        with immediate(db):
            append(db, actor=rng.choice(["alice", "bob", "local:root"]),
                   action=rng.choice(["model.promote", "dataset.add", "user.add"]),
                   target=f"model:m{rng.randrange(9)}", details={"n": rng.random(), "ü": "✓"})
    anchor = service.checkpoint(db)
    rows = list(service.read_rows(db))
    return rows, service.read_checkpoints(db), service.genesis_key(db), anchor


@pytest.fixture
def log(home: Home, db: Database) -> tuple[list[Row], Cps, NoteVerifier, str]:
    return _build(home, db, CHECKPOINT_EVERY + 6)


def _forge(seq: int, prev_entry: bytes | None, rng: random.Random) -> bytes:
    prev = leaf_hash(prev_entry).hex() if prev_entry is not None else "0" * 64
    return canonical_json({"seq": seq, "ts": "2030-01-01T00:00:00.000000Z", "actor": "mallory",
                           "action": "model.promote", "target": "model:evil",
                           "details": {"r": rng.random()}, "prev": prev})


def _row(seq: int, blob: bytes) -> Row:
    import json

    obj = json.loads(blob)
    return seq, blob, leaf_hash(blob), (obj["ts"], obj["actor"], obj["action"], obj["target"])


def _renumber(rows: list[Row], start: int, delta: int) -> list[Row]:
    return rows[:start] + [(s + delta, e, h, c) for s, e, h, c in rows[start:]]


def _cp_index(cps: Cps, rng: random.Random, minimum: int = 0) -> int:
    return rng.randrange(minimum, len(cps))


def _size(cps: Cps, j: int) -> int:
    return parse_checkpoint_body(parse_note(cps[j][1])[0])[1]


def _mutations(foreign: Signer) -> dict[str, Callable[[list[Row], Cps, random.Random], tuple[list[Row], Cps, int]]]:
    """Each returns (rows, checkpoints, the first bad seq a verifier must name)."""

    def edit_byte(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        s, e, h, c = rows[k]
        pos = rng.randrange(len(e))
        e = e[:pos] + bytes([e[pos] ^ rng.randrange(1, 256)]) + e[pos + 1:]
        return rows[:k] + [(s, e, h, c)] + rows[k + 1:], cps, k

    def edit_and_rehash(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows) - 1)
        blob = rows[k][1].replace(b'"target":"', b'"target":"x', 1)
        return rows[:k] + [_row(k, blob)] + rows[k + 1:], cps, k

    def edit_hash(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        s, e, h, c = rows[k]
        assert h is not None
        h = bytes([h[0] ^ 0x80]) + h[1:]
        return rows[:k] + [(s, e, h, c)] + rows[k + 1:], cps, k

    def edit_column(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        s, e, h, c = rows[k]
        assert c is not None
        return rows[:k] + [(s, e, h, (c[0], "mallory", c[2], c[3]))] + rows[k + 1:], cps, k

    def delete(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        return rows[:k] + rows[k + 1:], cps, k

    def swap(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k, j = sorted(rng.sample(range(len(rows)), 2))
        out = list(rows)
        out[k] = (k,) + rows[j][1:]
        out[j] = (j,) + rows[k][1:]
        return out, cps, k

    def insert(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        forged = _row(k, _forge(k, rows[k - 1][1] if k else None, rng))
        return rows[:k] + [forged] + _renumber(rows, k, 1)[k:], cps, k

    def renumber(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        return _renumber(rows, k, rng.randrange(1, 5)), cps, k

    def duplicate(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        k = rng.randrange(len(rows))
        copy = (k + 1,) + rows[k][1:]
        return rows[:k + 1] + [copy] + _renumber(rows, k + 1, 1)[k + 1:], cps, k + 1

    def replay_checkpoint(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        j = _cp_index(cps, rng, 1)
        i = rng.randrange(j)
        out = list(cps)
        out[j] = (cps[j][0], cps[i][1])
        return rows, out, _size(cps, j) - 1

    def flip_signature_bit(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        j = _cp_index(cps, rng)
        body, sig = cps[j][1].split("\n\n")
        head, b64 = sig.rstrip("\n").rsplit(" ", 1)
        raw = bytearray(base64.b64decode(b64))
        bit = rng.randrange(len(raw) * 8)
        raw[bit // 8] ^= 1 << (bit % 8)
        out = list(cps)
        out[j] = (cps[j][0], f"{body}\n\n{head} {base64.b64encode(bytes(raw)).decode()}\n")
        return rows, out, max(_size(cps, j) - 1, 0)

    def resign_foreign(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        j = _cp_index(cps, rng)
        body = cps[j][1].split("\n\n")[0] + "\n"
        out = list(cps)
        out[j] = (cps[j][0], foreign.sign_note(body))
        return rows, out, max(_size(cps, j) - 1, 0)

    def truncate(rows: list[Row], cps: Cps, rng: random.Random) -> tuple[list[Row], Cps, int]:
        keep = rng.randrange(len(rows))
        kept_cps = cps if rng.random() < 0.5 else [c for c in cps if _size(cps, cps.index(c)) <= keep]
        return rows[:keep], kept_cps, keep

    return {f.__name__: f for f in (edit_byte, edit_and_rehash, edit_hash, edit_column, delete,
                                    swap, insert, renumber, duplicate, replay_checkpoint,
                                    flip_signature_bit, resign_foreign, truncate)}


def test_the_untouched_log_verifies(log: tuple[list[Row], Cps, NoteVerifier, str]) -> None:
    rows, cps, trusted, anchor = log
    report = verify_log(rows, cps, trusted, anchor)
    assert report.ok, report.reason
    assert report.size == len(rows) and report.checkpoints == len(cps) >= 3


def test_random_mutations_are_all_detected_at_the_right_seq(
    log: tuple[list[Row], Cps, NoteVerifier, str],
) -> None:
    rows, cps, trusted, anchor = log
    foreign = Signer(name=trusted.name, seed=bytes(range(32)))
    mutations = _mutations(foreign)
    names = sorted(mutations)
    rng = random.Random(20240611)
    seen: Counter[str] = Counter()
    wrong: list[str] = []
    for _ in range(MUTATIONS):
        name = rng.choice(names)
        m_rows, m_cps, expected = mutations[name](rows, cps, rng)
        if (m_rows, m_cps) == (rows, cps):
            continue
        seen[name] += 1
        report = verify_log(m_rows, m_cps, trusted, anchor)
        if report.ok or report.first_bad_seq != expected:
            wrong.append(f"{name}: expected {expected}, got {report.first_bad_seq} ({report.reason})")
    assert not wrong, f"{len(wrong)} mutations missed or misplaced, e.g. {wrong[:5]}"
    assert sum(seen.values()) >= MUTATIONS - 50
    assert set(seen) == set(names)


def test_a_consistent_rewrite_without_the_key_is_placed_between_checkpoints(
    log: tuple[list[Row], Cps, NoteVerifier, str],
) -> None:
    rows, cps, trusted, _ = log
    k = 30
    out = rows[:k]
    for s, blob, _h, _c in rows[k:]:
        blob = blob.replace(b'"prev":"', b'"prev":"', 1)
        if s == k:
            blob = blob.replace(b'"target":"', b'"target":"y', 1)
        else:
            import json

            obj = json.loads(blob)
            obj["prev"] = leaf_hash(out[-1][1]).hex()
            blob = canonical_json(obj)
        out.append(_row(s, blob))
    report = verify_log(out, cps, trusted)
    assert not report.ok
    assert report.bad_range is not None and report.bad_range[0] <= k <= report.bad_range[1]
    assert report.bad_range[1] - report.bad_range[0] < CHECKPOINT_EVERY


def test_rotation_needs_the_old_key(home: Home, db: Database) -> None:
    rows, cps, trusted, anchor = _build(home, db, 10)
    service.rotate_key(home, "local:root")
    with immediate(db):
        append(db, actor="alice", action="model.promote", target="model:a", details={})
    assert service.verify(db).ok
    # A rotation entry forged onto the tail and then signed by the forger's key.
    forger = Signer.generate(trusted.name)
    rows = list(service.read_rows(db))
    cps = service.read_checkpoints(db)
    n = len(rows)
    import json

    blob = canonical_json({"seq": n, "ts": "2030-01-01T00:00:00Z", "actor": "mallory",
                           "action": "audit.key_rotated", "target": "key:x",
                           "details": {"old_key": forger.verifier.vkey,
                                       "new_key": forger.verifier.vkey},
                           "prev": leaf_hash(rows[-1][1]).hex()})
    json.loads(blob)
    report = verify_log(rows + [_row(n, blob)], cps, trusted)
    assert not report.ok and report.first_bad_seq == n
