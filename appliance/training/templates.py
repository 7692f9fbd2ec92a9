"""The built-in torch templates, with the feature encoding inside the module.

``TabularModel`` scales numeric inputs (NaN becomes the training mean) and
one-hot encodes categorical codes before the body, so exporting it exports
the preprocessing too. torch is imported here only, when a model is built:
importing it costs seconds that the CLI's ``--help`` must not pay.
"""

from __future__ import annotations

from typing import Any

from appliance.training.features import Encoding


def build_model(enc: Encoding, template: str, params: dict[str, Any]) -> Any:
    """A ``torch.nn.Module`` for ``template``; seed torch before calling."""
    import torch
    from torch import nn

    numeric = [i for i, f in enumerate(enc.features) if f.kind == "numeric"]
    categorical = [i for i, f in enumerate(enc.features) if f.kind == "categorical"]
    width = len(numeric) + sum(len(enc.features[i].vocabulary) for i in categorical)
    out_width = len(enc.classes) if enc.task == "classification" else 1
    layers: list[Any] = []
    if template.startswith("mlp_"):
        previous = width
        for size in params["hidden"]:
            layers += [nn.Linear(previous, size), nn.ReLU()]
            previous = size
        layers.append(nn.Linear(previous, out_width))
    else:
        layers.append(nn.Linear(width, out_width))

    class TabularModel(nn.Module):
        mean: Any
        std: Any

        def __init__(self) -> None:
            super().__init__()
            self.numeric = numeric
            self.categorical = categorical
            self.classification = enc.task == "classification"
            means = [enc.features[i].mean for i in numeric]
            stds = [enc.features[i].std for i in numeric]
            self.register_buffer("mean", torch.tensor(means, dtype=torch.float32).reshape(1, -1))
            self.register_buffer("std", torch.tensor(stds, dtype=torch.float32).reshape(1, -1))
            for j, i in enumerate(categorical):
                size = len(enc.features[i].vocabulary)
                # Row 0 is the code -1 (unseen or missing): all zeros.
                table = torch.cat([torch.zeros(1, size), torch.eye(size)])
                self.register_buffer(f"onehot{j}", table)
            self.register_buffer("target_mean", torch.tensor(enc.target_mean))
            self.register_buffer("target_std", torch.tensor(enc.target_std))
            self.body = nn.Sequential(*layers)

        def encode(self, *columns: Any) -> Any:
            parts = []
            if self.numeric:
                x = torch.cat([columns[i] for i in self.numeric], dim=1)
                x = (x - self.mean) / self.std
                parts.append(torch.where(torch.isnan(x), torch.zeros_like(x), x))
            for j, i in enumerate(self.categorical):
                table = getattr(self, f"onehot{j}")
                parts.append(table[(columns[i] + 1).reshape(-1)])
            return torch.cat(parts, dim=1)

        def raw(self, *columns: Any) -> Any:
            """Logits, or the standardised prediction: what the loss sees."""
            return self.body(self.encode(*columns))

        def forward(self, *columns: Any) -> Any:
            z = self.raw(*columns)
            if self.classification:
                return torch.softmax(z, dim=1), torch.argmax(z, dim=1)
            return z.reshape(-1) * self.target_std + self.target_mean

    return TabularModel()


def output_names(task: str) -> list[str]:
    return ["probabilities", "label"] if task == "classification" else ["prediction"]
