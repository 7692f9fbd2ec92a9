"""Training harness overhead against a plain torch loop: same model, data, epochs, threads.

    .venv/bin/python -m tests.bench.bench_training

"harness loop" is the time from the run's start event to its last epoch (the
harness's own training loop, progress events and all); "harness total" adds
reading the dataset back from its blob, export, onnx.checker, the parity check
and registration.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

ROWS, EPOCHS, BATCH, HIDDEN, SEED = 20_000, 10, 256, [64, 32], 0


def write_data(path: Path) -> None:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(ROWS, 8))
    cat = rng.choice(["a", "b", "c", "d"], size=ROWS)
    y = (x[:, 0] + x[:, 1] * x[:, 2] + (cat == "a")) > 0.5
    lines = [",".join([f"f{i}" for i in range(8)] + ["cat", "y"])]
    for i in range(ROWS):
        lines.append(",".join(f"{v:.5f}" for v in x[i]) + f",{cat[i]},{int(y[i])}")
    path.write_text("\n".join(lines) + "\n")


def plain_loop(n_train: int, width: int) -> float:
    """The same network and loop written by hand on pre-encoded tensors."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    x = torch.randn(n_train, width)
    y = torch.randint(0, 2, (n_train,))
    layers: list[torch.nn.Module] = []
    prev = width
    for h in HIDDEN:
        layers += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
        prev = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(prev, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(n_train)
        for s in range(0, n_train, BATCH):
            idx = order[s:s + BATCH]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def main() -> None:
    from appliance.datasets import add_dataset
    from appliance.storage.home import Home, init_home
    from appliance.training import run_training

    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home")
        init_home(home)
        data = Path(tmp) / "d.csv"
        write_data(data)
        db = home.db()
        add_dataset(db, home.blobs, "bench", data, actor="bench", target="y")
        db.close()
        marks: dict[str, float] = {}

        def progress(event: dict) -> None:
            if event["event"] == "started":
                marks["start"] = time.perf_counter()
            elif event["event"] == "epoch":
                marks["last_epoch"] = time.perf_counter()

        recipe = {"name": "bench", "dataset": "bench@1", "seed": SEED, "device": "cpu",
                  "model": {"template": "mlp_classifier",
                            "params": {"epochs": EPOCHS, "batch_size": BATCH, "hidden": HIDDEN}}}
        # Alternate the two, twice, and keep each one's best: the first torch loop in a
        # process pays warm-up costs that belong to neither.
        plain_loop(14_000, 12)
        loops, totals, baselines = [], [], []
        for _ in range(2):
            t0 = time.perf_counter()
            result = run_training(home, recipe, "bench", progress=progress)
            totals.append(time.perf_counter() - t0)
            loops.append(marks["last_epoch"] - marks["start"])
            n_train = result.metrics["rows"]["train"]
            baselines.append(plain_loop(n_train, 8 + 4))
        total, harness_loop, baseline = min(totals), min(loops), min(baselines)
    print(f"rows {ROWS} (train {n_train}), epochs {EPOCHS}, batch {BATCH}, hidden {HIDDEN}, "
          "1 thread, CPU, best of 2")
    print(f"{'':<28}{'seconds':>10}{'vs plain':>10}")
    print(f"{'plain torch loop':<28}{baseline:>10.3f}{1.0:>10.3f}")
    print(f"{'harness loop':<28}{harness_loop:>10.3f}{harness_loop / baseline:>10.3f}")
    print(f"{'harness total (end to end)':<28}{total:>10.3f}{total / baseline:>10.3f}")
    print(f"loop overhead {100 * (harness_loop / baseline - 1):+.1f}% (goal <= +10%)")


if __name__ == "__main__":
    main()
