"""Small synthetic tabular files for the datasets, registry and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """Columns: x1, x2 (numeric, some missing), colour (categorical), member (boolean),
    day (timestamp), label (yes/no, depends on the others), price (numeric)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    label = (x1 + 0.5 * x2 + (colour == "red")) > 0.3
    lines = ["x1,x2,colour,member,day,label,price"]
    for i in range(rows):
        x2_cell = "" if i % 40 == 7 else f"{x2[i]:.5f}"
        lines.append(
            f"{x1[i]:.5f},{x2_cell},{colour[i]},{'true' if i % 3 else 'false'},"
            f"2024-01-{1 + i % 28:02d}T00:00:00Z,{'yes' if label[i] else 'no'},"
            f"{2 * x1[i] - x2[i] + 3:.4f}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path
