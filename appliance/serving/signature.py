"""A model's inputs and outputs in the Open Inference Protocol's terms.

Read from the onnxruntime session itself, so metadata always describes the
graph that actually runs: V2 datatype names, and -1 for every dynamic axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

# V2 datatype -> numpy dtype. BYTES travel as object arrays of str.
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


_NUMPY_TO_V2 = {dtype: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}


def numpy_to_v2(dtype: np.dtype[Any]) -> str:
    name = _NUMPY_TO_V2.get(dtype)
    if name is not None:
        return name
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    if not dtype.isnative:  # the same type in the other byte order
        return numpy_to_v2(dtype.newbyteorder("="))
    raise ValueError(f"no V2 datatype for numpy dtype {dtype}")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 where the axis is dynamic

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """Derived values are computed once: every request reads them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @cached_property
    def batchable(self) -> bool:
        """True when every input and output has a dynamic first axis, so rows can be merged."""
        specs = self.inputs + self.outputs
        return bool(specs) and all(s.shape and s.shape[0] == -1 for s in specs)

    @cached_property
    def _by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in self.inputs}

    def input(self, name: str) -> TensorSpec | None:
        return self._by_name.get(name)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or ()))


def from_session(session: Any) -> Signature:
    """Build the signature from an ``onnxruntime.InferenceSession``."""

    def spec(arg: Any) -> TensorSpec:
        datatype = ONNX_TO_V2.get(arg.type)
        if datatype is None:
            raise ValueError(f"tensor '{arg.name}' has type {arg.type}, which V2 can not carry")
        return TensorSpec(arg.name, datatype, _dims(arg.shape))

    return Signature(
        inputs=tuple(spec(a) for a in session.get_inputs()),
        outputs=tuple(spec(a) for a in session.get_outputs()),
    )
