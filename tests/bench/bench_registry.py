"""Registry at scale: 10,000 model versions, then ``models list`` and ``models show`` timed.

    .venv/bin/python -m tests.bench.bench_registry

Each command runs in-process through the CLI (parsing, one service call,
printing), best of 5, against the 100 ms goal.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from appliance import registry
from appliance.cli import main as cli
from appliance.storage.db import immediate
from appliance.storage.home import Home, init_home

MODELS, VERSIONS_EACH, GOAL_MS = 10, 1000, 100.0


def populate(home: Home) -> None:
    db = home.db()
    digest = home.blobs.put_bytes(b"not a real model; the registry only stores its digest")
    signature = {"inputs": [{"name": f"f{i}", "datatype": "FP32", "shape": [-1, 1]}
                            for i in range(20)],
                 "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1]}],
                 "feature_names": [f"f{i}" for i in range(20)]}
    for m in range(MODELS):
        with immediate(db):
            for _ in range(VERSIONS_EACH):
                registry.insert_version(db, name=f"model-{m}", onnx_digest=digest,
                                        signature=signature, actor="bench", source="import",
                                        metrics={"test": {"accuracy": 0.9}})
        for v in (10, 500, 900):
            registry.set_alias(db, f"model-{m}", v, "production", "bench")
        registry.set_alias(db, f"model-{m}", 950, "staging", "bench")
    db.close()


def best_ms(runner: CliRunner, home: Path, *args: str) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        result = runner.invoke(cli, ["--home", str(home), *args])
        times.append((time.perf_counter() - start) * 1000)
        if result.exit_code != 0:
            raise SystemExit(f"{args} failed: {result.output}")
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home")
        init_home(home)
        t0 = time.perf_counter()
        populate(home)
        fill = time.perf_counter() - t0
        runner = CliRunner()
        cases = [
            ("models list", ("models", "list")),
            ("models list --json", ("models", "list", "--json")),
            ("models list NAME --limit 20", ("models", "list", "model-3", "--limit", "20")),
            ("models list NAME (1000 versions)", ("models", "list", "model-3")),
            ("models show NAME@VERSION", ("models", "show", "model-3@777")),
            ("models show NAME@ALIAS --json", ("models", "show", "model-3@production", "--json")),
            ("models show NAME", ("models", "show", "model-3")),
        ]
        print(f"{MODELS * VERSIONS_EACH} versions ({MODELS} models) registered in {fill:.1f} s")
        print(f"{'command':<36}{'ms':>9}{'goal ms':>9}{'ratio':>8}")
        for label, args in cases:
            ms = best_ms(runner, home.root, *args)
            print(f"{label:<36}{ms:>9.1f}{GOAL_MS:>9.0f}{ms / GOAL_MS:>8.2f}")


if __name__ == "__main__":
    main()
