"""onnxruntime sessions for checks and evaluation: small, quiet, on the CPU.

The serving daemon builds its own options (thread counts from its settings);
everything else that runs a model once or a few times uses these.
"""

from __future__ import annotations

from typing import Any


def quiet_options(threads: int = 1) -> Any:
    """Session options: ``threads`` intra-op threads, no spinning, errors only in the log.

    Spinning threads steal the CPU an HTTP loop or a training job needs on a small machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def cpu_session(model: bytes | str) -> Any:
    """A one-thread CPU session on a model's bytes or path."""
    import onnxruntime as ort

    return ort.InferenceSession(model, sess_options=quiet_options(),
                                providers=["CPUExecutionProvider"])
