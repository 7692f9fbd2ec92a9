"""The gradient-boosted tree template against scikit-learn used by hand: same data, split
rows, parameters and threads.

    .venv/bin/python -m tests.bench.bench_trees

"plain fit" is HistGradientBoostingClassifier.fit on the run's training rows, encoded
beforehand. "template" is ``train_trees`` on the table already read: encoding the rows,
the same fit, the per-tree loss curves, the metrics of each split, the ONNX export,
onnx.checker and the parity check. "run end to end" is ``run_training``: the template
plus reading the dataset back from its blob (parsing the CSV) and recording the run and
the version. The sides alternate, five rounds, medians reported; the parity and test
metrics of the last run are printed beside the MLP template's on the same data.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.bench.bench_training import ROWS, SEED, write_data

PARAMS = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, "max_depth": None,
          "min_samples_leaf": 20, "l2_regularization": 0.0, "max_bins": 255}
ROUNDS = 5


def plain_fit(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingClassifier(**PARAMS, early_stopping=False, random_state=SEED)
    with threadpool_limits(limits=1, user_api="openmp"):
        start = time.perf_counter()
        model.fit(x, y)
        return time.perf_counter() - start


def main() -> None:
    from appliance.datasets import add_dataset
    from appliance.datasets.service import get_dataset_version, load_table
    from appliance.storage.home import Home, init_home
    from appliance.training import features as feat
    from appliance.training import load_recipe, run_training
    from appliance.training.trainer import split_rows
    from appliance.training.trees import matrix, train_trees

    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home")
        init_home(home)
        data = Path(tmp) / "d.csv"
        write_data(data)
        db = home.db()
        add_dataset(db, home.blobs, "bench", data, actor="bench", target="y")
        table = load_table(home.blobs, get_dataset_version(db, "bench@1"))
        db.close()
        recipe = {"name": "bench", "dataset": "bench@1", "seed": SEED, "device": "cpu",
                  "model": {"template": "gbt_classifier", "params": {"max_iter": 100}}}
        split = {"train": 0.7, "validation": 0.15, "test": 0.15}
        rows = split_rows(feat.labelled_rows(table, "y", "classification"), split, SEED)
        chosen = feat.choose_features(table, "y", None)
        enc = feat.fit_encoding(table, "y", chosen, "classification", rows["train"])
        x, y = matrix(table, enc, rows["train"]), feat.targets(table, enc, rows["train"])
        parsed = load_recipe(recipe)
        plain_fit(x, y)  # the first fit in a process pays for imports and OpenMP start-up
        templates, totals, plains = [], [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            train_trees(table, parsed, "y", threads=1, parity_tolerance=1e-5,
                        progress=lambda event: None)
            templates.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = run_training(home, recipe, "bench")
            totals.append(time.perf_counter() - t0)
            plains.append(plain_fit(x, y))
        mlp = run_training(home, {**recipe, "name": "bench-mlp", "model": {
            "template": "mlp_classifier", "params": {"epochs": 10, "hidden": [64, 32]}}}, "bench")
    plain, template, total = (statistics.median(v) for v in (plains, templates, totals))
    print(f"rows {ROWS} (train {len(y)}), {PARAMS['max_iter']} trees, 1 thread, CPU, "
          f"median of {ROUNDS} alternating rounds")
    print(f"{'':<30}{'seconds':>10}{'vs plain':>10}")
    print(f"{'plain scikit-learn fit':<30}{plain:>10.3f}{1.0:>10.3f}")
    print(f"{'template (fit to parity)':<30}{template:>10.3f}{template / plain:>10.3f}")
    print(f"{'run end to end':<30}{total:>10.3f}{total / plain:>10.3f}")
    test, other = result.metrics["test"], mlp.metrics["test"]
    print("rounds (s): plain " + " ".join(f"{v:.2f}" for v in plains) + "; template "
          + " ".join(f"{v:.2f}" for v in templates) + "; run " + " ".join(f"{v:.2f}" for v in totals))
    print(f"parity max |onnxruntime - scikit-learn| {result.parity_max_abs_diff:.3g}")
    print(f"test accuracy: gbt_classifier {test['accuracy']:.4f}, mlp_classifier "
          f"{other['accuracy']:.4f}; roc_auc {test['roc_auc']:.4f} vs {other['roc_auc']:.4f}")


if __name__ == "__main__":
    main()
