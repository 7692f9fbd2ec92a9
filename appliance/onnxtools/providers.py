"""Which onnxruntime execution providers actually work here.

onnxruntime-gpu lists the CUDA provider even where CUDA is missing, and then
logs an error when a session asks for it. So the CUDA provider is tried only
when NVML found a GPU, once, with onnxruntime's logging turned down; a
provider counts as usable only when a real session on a tiny model ran on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.gpu.inventory import Inventory
from appliance.onnxtools.sessions import quiet_options


@dataclass(frozen=True)
class ProviderCheck:
    usable: tuple[str, ...]
    available: tuple[str, ...]
    notes: tuple[str, ...]


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exceptions onnxruntime raises for a model or provider it can not run.

    They derive from ``Exception`` directly, so they are named here once.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError",
             "RuntimeException", "InvalidProtobuf", "ModelLoaded", "NotImplemented",
             "InvalidGraph", "EPFail")
    found = tuple(getattr(state, n) for n in names if hasattr(state, n))
    return (RuntimeError, *found)


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _runs_on(model: bytes, provider: str) -> bool:
    import onnxruntime as ort

    sess = ort.InferenceSession(model, sess_options=quiet_options(), providers=[provider])
    if provider not in sess.get_providers():
        return False
    out = sess.run(None, {"x": np.array([[-1.0, 2.0]], dtype=np.float32)})[0]
    return bool(np.allclose(out, [[0.0, 2.0]]))


def check_providers(inventory: Inventory) -> ProviderCheck:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    available = tuple(ort.get_available_providers())
    model = _tiny_model()
    usable: list[str] = []
    notes: list[str] = []
    if inventory.gpus and "CUDAExecutionProvider" in available:
        try:
            if _runs_on(model, "CUDAExecutionProvider"):
                usable.append("CUDAExecutionProvider")
            else:
                notes.append("CUDA provider present but a session fell back to the CPU")
        except ort_errors() as exc:
            notes.append(f"CUDA provider failed to load: {str(exc).splitlines()[0]}")
    elif not inventory.gpus:
        notes.append("CUDA provider not tried: no GPU found")
    if _runs_on(model, "CPUExecutionProvider"):
        usable.append("CPUExecutionProvider")
    return ProviderCheck(usable=tuple(usable), available=available, notes=tuple(notes))
