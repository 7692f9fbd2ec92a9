"""onnxruntime and ONNX helpers, below every service that loads a model.

- ``providers``: which execution providers actually run here (CUDA only where
  NVML found a GPU), and the exceptions onnxruntime raises.
- ``models``: reading and checking ONNX files (signature, onnx.checker, a test
  inference on zeros).
- ``sessions``: the session options every CPU-side session uses.
"""
