"""The serving engine: ONNX sessions, execution providers, batching."""
