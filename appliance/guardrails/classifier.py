"""The injection classifier: an ONNX model from the registry, run with onnxruntime.

Two signatures are accepted, told apart by the model's first input:

- **features in**: float32 ``[batch, 16384]``, the rows of ``features.py`` (what
  ``appliance guardrails train`` makes);
- **text in**: a string tensor ``[batch]`` or ``[batch, 1]`` of raw prompts (e.g. a
  scikit-learn pipeline of ``TfidfVectorizer`` and ``LogisticRegression`` converted with
  skl2onnx, which onnxruntime runs with its own string operators).

The first output is the score: ``[batch]`` or ``[batch, 1]`` is the probability that the
text is an attack; ``[batch, 2]`` is the two classes' probabilities (benign, attack), the
second taken. Scores are compared with the policy's threshold.

A features-in model that is exactly what ``train.to_onnx`` writes (``MatMul`` by a
``[16384, 1]`` weight, ``Add`` of a bias, ``Sigmoid``) is scored from its weights in numpy,
over the text's non-zero features only: the same score as onnxruntime's (to float32
rounding) in a fraction of the time, since a row has a few hundred non-zero entries of
16,384. Any other model runs in onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.errors import BadInput
from appliance.guardrails import features
from appliance.onnxtools.sessions import cpu_session


@dataclass
class Classifier:
    """A loaded classifier; ``ref`` names its registry version (NAME@VERSION)."""

    ref: str
    session: Any
    input_name: str
    takes_text: bool
    text_rank: int = 1
    linear: tuple[np.ndarray, np.float32] | None = None  # (weights, bias) of our own export

    @classmethod
    def from_bytes(cls, model: bytes, ref: str) -> Classifier:
        session = cpu_session(model)
        first = session.get_inputs()[0]
        shape = list(first.shape)
        if first.type == "tensor(string)":
            return cls(ref, session, first.name, True, len(shape))
        if first.type != "tensor(float)" or len(shape) != 2 or shape[1] != features.DIM:
            raise BadInput(
                f"{ref}: a guardrail classifier takes text (a string tensor) or float32 "
                f"features [batch, {features.DIM}]; its input {first.name} is {first.type} "
                f"{shape}")
        return cls(ref, session, first.name, False, linear=_linear(model))

    def _scores(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim == 2 and raw.shape[1] == 2:
            return raw[:, 1]
        return raw.reshape(raw.shape[0], -1)[:, 0]

    def score_normalised(self, normalised: list[str], raw: list[str]) -> np.ndarray:
        """Scores of texts given both normalised (features) and as written (text models)."""
        if self.takes_text:
            feed = np.array(raw, dtype=object)
            if self.text_rank == 2:
                feed = feed.reshape(-1, 1)
        elif self.linear is not None:
            weights, bias = self.linear
            z = np.empty(len(normalised), dtype=np.float32)
            for i, text in enumerate(normalised):
                nz, values = features.sparse(text)
                z[i] = np.dot(weights[nz], values) + bias
            return np.float32(1) / (np.float32(1) + np.exp(-z))
        else:
            feed = np.zeros((len(normalised), features.DIM), dtype=np.float32)
            for i, text in enumerate(normalised):
                features.vector(text, feed[i])
        return self._scores(self.session.run(None, {self.input_name: feed})[0])

    def score(self, texts: list[str]) -> np.ndarray:
        from appliance.guardrails.normalise import normalise

        return self.score_normalised([normalise(t) for t in texts], texts)


def _linear(model: bytes) -> tuple[np.ndarray, np.float32] | None:
    """(weights, bias) when the model is ``features -> MatMul -> Add -> Sigmoid`` with the
    weights and bias as initializers (what ``train.to_onnx`` writes), else None."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(model).graph
    if [n.op_type for n in graph.node] != ["MatMul", "Add", "Sigmoid"] \
            or len(graph.input) != 1 or len(graph.output) != 1:
        return None
    matmul, add, sigmoid = graph.node
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    feats = graph.input[0].name
    if list(matmul.input[:1]) != [feats] or len(matmul.input) != 2 \
            or matmul.input[1] not in init or list(sigmoid.input) != list(add.output) \
            or list(sigmoid.output) != [graph.output[0].name] or len(add.input) != 2:
        return None
    other = [x for x in add.input if x != matmul.output[0]]
    if len(other) != 1 or other[0] not in init:
        return None
    weights, bias = init[matmul.input[1]], init[other[0]]
    if weights.shape != (features.DIM, 1) or bias.size != 1 \
            or weights.dtype != np.float32 or bias.dtype != np.float32:
        return None
    return np.ascontiguousarray(weights[:, 0]), np.float32(bias.reshape(-1)[0])
