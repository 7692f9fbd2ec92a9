"""Audit trail benchmark: append throughput and verification speed.

    .venv/bin/python -m tests.bench.bench_audit [--entries N]

Appends each entry in its own transaction with synchronous=FULL (goal >= 500/s),
then verifies the whole log on one core (goal >= 20,000 entries/s, 1,000,000 in
under a minute). The baseline beside each figure is the goal.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from appliance.audit import append, service
from appliance.audit.checkpoints import CHECKPOINT_EVERY
from appliance.audit.log import now_iso
from appliance.audit.standalone_verify import GENESIS_PREV, canonical_json, leaf_hash
from appliance.storage.db import immediate
from appliance.storage.home import Home, init_home

APPEND_GOAL = 500.0
VERIFY_GOAL = 20_000.0


def bulk_fill(home: Home, n: int) -> None:
    """Write n well-formed entries quickly (many per transaction), signing a checkpoint
    every CHECKPOINT_EVERY entries exactly as appending one by one does."""
    db = home.db()
    row = db.execute("SELECT seq, leaf_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, bytes(row[1]).hex()) if row else (0, GENESIS_PREV)
    end = seq + n
    while seq < end:
        with immediate(db):
            for _ in range(min(10_000, end - seq)):
                ts, target = now_iso(), f"model:m@{seq}"
                entry = canonical_json({"seq": seq, "ts": ts, "actor": "bench",
                                        "action": "model.promote", "target": target,
                                        "details": {"version": seq, "gate": "ok"}, "prev": prev})
                leaf = leaf_hash(entry)
                db.conn.execute(
                    "INSERT INTO audit_log (seq, ts, actor, action, target, entry, leaf_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (seq, ts, "bench", "model.promote", target, entry, leaf))
                prev, seq = leaf.hex(), seq + 1
                if seq % CHECKPOINT_EVERY == 0:
                    service.checkpoint_in_transaction(db)
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=2000, help="entries appended one by one")
    parser.add_argument("--entries", type=int, default=200_000, help="log size to verify")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(root=Path(tmp) / "home", synchronous="full")
        init_home(home)
        service.ensure_key(home, "bench")
        db = home.db()
        t = time.perf_counter()
        for i in range(args.appends):
            with immediate(db):
                append(db, actor="bench", action="model.promote", target=f"model:m@{i}",
                       details={"version": i})
        append_rate = args.appends / (time.perf_counter() - t)
        db.close()
        bulk_fill(home, args.entries - args.appends - 1)
        db = home.db()
        t = time.perf_counter()
        report = service.verify(db)
        seconds = time.perf_counter() - t
        db.close()
        if not report.ok:
            raise SystemExit(f"verification failed: {report.reason}")
        verify_rate = report.size / seconds
        print(f"{'measure':<44}{'ours':>14}{'goal':>14}{'ratio':>8}")
        print(f"{'append, own txn, synchronous=FULL (/s)':<44}{append_rate:>14,.0f}"
              f"{APPEND_GOAL:>14,.0f}{append_rate / APPEND_GOAL:>8.2f}")
        print(f"{'verify, one core (entries/s)':<44}{verify_rate:>14,.0f}"
              f"{VERIFY_GOAL:>14,.0f}{verify_rate / VERIFY_GOAL:>8.2f}")
        projected = 1_000_000 / verify_rate
        print(f"{'verify 1,000,000 entries (s, projected)' if report.size < 1_000_000 else 'verify 1,000,000 entries (s)':<44}"
              f"{projected:>14,.1f}{60:>14,.0f}{60 / projected:>8.2f}")
        print(f"(verified {report.size:,} entries and {report.checkpoints:,} checkpoints "
              f"in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
