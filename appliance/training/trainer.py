"""Training a built-in template deterministically, then exporting and checking it.

Determinism on the CPU: torch's deterministic algorithms, a fixed number of
threads, every random source seeded from the recipe (weights, the split, the
batch order), and the data read back from its hashed blob. The process-wide
torch settings are restored afterwards, so a long-lived caller is unaffected.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.datasets.table import Table
from appliance.errors import BadInput, OperationFailed
from appliance.onnxtools.models import signature_of
from appliance.training import features as feat
from appliance.training.export import export_onnx, parity, weights_digest
from appliance.training.recipe import Recipe
from appliance.training.templates import build_model, output_names

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Outcome:
    """What a training produced, before anything is registered."""

    onnx: bytes
    weights_digest: str
    metrics: dict[str, Any]
    signature: dict[str, Any]
    device: str
    parity_max_abs_diff: float | None = None
    log: list[str] = field(default_factory=list)
    # (step, name, value): a script's metrics.jsonl; a template's are its epoch events.
    steps: list[tuple[int, str, float]] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    import torch

    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_det)


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if wanted == "cuda" and not available:
        raise OperationFailed("recipe asks for device 'cuda' but torch sees no GPU; "
                              "use 'auto' or 'cpu'")
    if available:
        # cuBLAS needs this for deterministic results; set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return "cuda"
    return "cpu"


def split_rows(rows: np.ndarray, split: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(rows)
    n = len(order)
    n_train = int(round(n * split["train"]))
    n_val = int(round(n * split["validation"]))
    parts = {
        "train": np.sort(order[:n_train]),
        "validation": np.sort(order[n_train:n_train + n_val]),
        "test": np.sort(order[n_train + n_val:]),
    }
    for name in ("train", "test"):
        if len(parts[name]) == 0:
            raise BadInput(f"the {name} split is empty: {n} labelled rows are too few for "
                           f"split {split}")
    return parts


def train_template(table: Table, recipe: Recipe, target: str, *, threads: int,
                   parity_tolerance: float, progress: Progress) -> Outcome:
    import torch

    if recipe.template is None or recipe.task is None:
        raise BadInput("recipe names no built-in template")
    task = recipe.task
    params = recipe.params
    chosen = feat.choose_features(table, target, recipe.features)
    splits = split_rows(feat.labelled_rows(table, target, task), recipe.split, recipe.seed)
    enc = feat.fit_encoding(table, target, chosen, task, splits["train"])
    device = resolve_device(recipe.device)
    with deterministic(recipe.seed, threads):
        model = build_model(enc, recipe.template, params).to(device)
        inputs = {k: [torch.from_numpy(a).to(device) for a in feat.model_inputs(table, enc, rows)]
                  for k, rows in splits.items()}
        labels = {k: torch.from_numpy(feat.targets(table, enc, rows)).to(device)
                  for k, rows in splits.items()}
        fit(model, inputs, labels, enc, params, recipe.seed, progress)
        model = model.cpu().eval()
        metrics: dict[str, Any] = {}
        with torch.no_grad():
            for name, rows in splits.items():
                if len(rows) == 0:
                    continue
                out = model(*[t.cpu() for t in inputs[name]])
                scores = out[0] if task == "classification" else out
                metrics[name] = feat.compute_metrics(
                    task, labels[name].cpu().numpy(), scores.numpy(), recipe.metrics)
            test_inputs = feat.model_inputs(table, enc, splits["test"])
            expected = model(*[torch.from_numpy(a) for a in test_inputs])
            expected = expected if isinstance(expected, tuple) else (expected,)
        progress({"event": "export"})
        onnx_bytes = export_onnx(model, enc, test_inputs)
    wanted = {n: t.numpy() for n, t in zip(output_names(task), expected, strict=True)}
    diff = parity(onnx_bytes, feat.raw_inputs(table, enc, splits["test"]), wanted,
                  parity_tolerance)
    progress({"event": "parity", "max_abs_diff": diff})
    return outcome(onnx_bytes, task, target, enc, splits, metrics, device, diff)


def outcome(onnx_bytes: bytes, task: str, target: str, enc: Any, splits: dict[str, Any],
            metrics: dict[str, Any], device: str, diff: float) -> Outcome:
    """A trained template's result: the ONNX file, its signature (task, target, classes,
    features) and weights digest, the metrics with the split's row counts."""
    signature = signature_of(onnx_bytes)
    signature.update(
        task=task, target=target, classes=list(enc.classes),
        features=[{"name": f.name, "kind": f.kind, "type": f.source_type}
                  for f in enc.features],
    )
    metrics["rows"] = {k: int(len(v)) for k, v in splits.items()}
    return Outcome(onnx=onnx_bytes, weights_digest=weights_digest(onnx_bytes), metrics=metrics,
                   signature=signature, device=device, parity_max_abs_diff=diff)


def fit(model: Any, inputs: dict[str, list[Any]], labels: dict[str, Any], enc: feat.Encoding,
        params: dict[str, Any], seed: int, progress: Progress) -> None:
    """The training loop: Adam, seeded batch order, one progress event per epoch."""
    import torch

    classification = enc.task == "classification"
    loss_fn: Any = torch.nn.CrossEntropyLoss(ignore_index=-1) if classification else torch.nn.MSELoss()

    def prepare(y: Any) -> Any:
        return y if classification else (y - enc.target_mean) / enc.target_std

    def output(z: Any) -> Any:
        return z if classification else z.reshape(-1)

    # The encoding has no trainable parts, so each split is encoded once and the loop
    # trains the body on the encoded matrix: the same arithmetic as encoding every batch.
    with torch.no_grad():
        x_train = model.encode(*inputs["train"])
        x_val = model.encode(*inputs["validation"]) if len(labels["validation"]) else None
    y_train, y_val = prepare(labels["train"]), prepare(labels["validation"])
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"],
                                 weight_decay=params["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    n, batch = len(y_train), int(params["batch_size"])
    epochs = int(params["epochs"])
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(y_train.device)
        total = torch.zeros((), device=y_train.device)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            loss = loss_fn(output(model.body(x_train[idx])), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        event: dict[str, Any] = {"event": "epoch", "epoch": epoch, "epochs": epochs,
                                 "loss": float(total) / n}
        if x_val is not None:
            model.eval()
            with torch.no_grad():
                event["val_loss"] = float(loss_fn(output(model.body(x_val)), y_val))
        progress(event)
