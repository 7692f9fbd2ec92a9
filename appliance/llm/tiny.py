"""A small language model built on this machine, for the demo, the tests and benchmarks.

Nothing is downloaded. A byte-level BPE tokenizer is trained with ``tokenizers`` on a
corpus of made-up facts ("What is the capital of Veltria?" "Orsk."), a Llama-architecture
model from ``transformers`` is trained on them with torch until it answers each one, and
onnxruntime-genai's model builder converts it, offline, to a model folder
(``genai_config.json``, ``model.onnx`` and its data, the tokenizer files) like any a site
would bring.

The corpus is written in the plain chat template (``role: content`` lines, then
``assistant:``), and the tokenizer configuration carries that template, so the chat
endpoint and the completions endpoint both get the model's answers.

Sizes: ``tiny`` is about 110k parameters (two layers, hidden 64) and builds in seconds;
``small`` is a few million (four layers, hidden 256), a millisecond or more per token,
for benchmarks that need the model's time to dominate.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Made-up places, so the model can only know them from its training.
PLACES = [
    ("Veltria", "Orsk"), ("Marovia", "Tessin"), ("Quorland", "Belmar"), ("Ostravia", "Kelp"),
    ("Zenthia", "Arun"), ("Pallador", "Miro"), ("Corvania", "Dusk"), ("Eldmark", "Fenn"),
    ("Brisca", "Holm"), ("Talvara", "Ives"), ("Nimbara", "Jode"), ("Skellig", "Lorne"),
]
COLOURS = [("sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"),
           ("blood", "red"), ("sun", "yellow")]

EOS = "</s>"
BOS = "<s>"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    steps: int
    lr: float


SIZES = {
    "tiny": Size(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, steps=600,
                 lr=1e-2),
    "small": Size(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=768, steps=250,
                  lr=3e-3),
}


def facts() -> list[tuple[str, str]]:
    """The questions the model is taught, with their answers."""
    out = [(f"What is the capital of {p}?", f"{c}.") for p, c in PLACES]
    out += [(f"What colour is the {thing}?", f"{colour}.") for thing, colour in COLOURS]
    return out


def prompt_for(question: str) -> str:
    """A question in the plain chat template, ready for the answer."""
    return f"user: {question}\nassistant:"


def corpus() -> list[str]:
    return [f"{prompt_for(q)} {a}" for q, a in facts()]


def build(out: str | os.PathLike[str], *, size: str = "tiny", seed: int = 0,
          progress: Callable[[str], None] | None = None) -> Path:
    """Train and convert the model into ``out`` (created; must not exist or be empty)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty")
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="tiny-llm-") as tmp:
        hf = Path(tmp) / "hf"
        say(f"training a {size} tokenizer and model on {len(facts())} facts")
        _train(hf, SIZES[size], seed)
        say("converting it with onnxruntime-genai's model builder")
        staging = Path(tmp) / "onnx"
        _convert(hf, staging, Path(tmp) / "cache")
        target.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            shutil.move(str(item), target / item.name)
    return target


def _train(hf: Path, size: Size, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a library's bar in the middle of our progress lines

    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    lines = corpus()
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=EOS, model_max_length=128)
    fast.chat_template = CHAT_TEMPLATE
    hf.mkdir(parents=True)
    fast.save_pretrained(hf)

    bos, eos = int(fast.convert_tokens_to_ids(BOS)), int(fast.convert_tokens_to_ids(EOS))
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads, max_position_embeddings=128,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    # No BOS: onnxruntime-genai's tokenizer adds none, and training should match serving.
    encoded = [[*fast(line, add_special_tokens=False)["input_ids"], eos] for line in lines]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), eos, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    answers = torch.zeros((len(encoded), width), dtype=torch.bool)  # the answers' tokens
    for i, row in enumerate(encoded):
        ids[i, :len(row)] = torch.tensor(row)
        labels[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
        asked = len(fast(prompt_for(facts()[i][0]), add_special_tokens=False)["input_ids"])
        answers[i, asked:len(row)] = True
    optimiser = torch.optim.AdamW(model.parameters(), lr=size.lr)
    model.train()
    for step in range(size.steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 24 and _knows_every_fact(model, ids, answers):
            break  # every answer is the most likely continuation already
    model.eval()
    model.save_pretrained(hf)


def _knows_every_fact(model: Any, ids: Any, answers: Any) -> bool:
    """Whether the most likely next token is right at every token of every answer (its
    end-of-sequence included), given the question and the answer so far."""
    import torch

    with torch.no_grad():
        predicted = model(input_ids=ids).logits[:, :-1].argmax(-1)
    wanted = answers[:, 1:]
    return bool((predicted[wanted] == ids[:, 1:][wanted]).all())


def _convert(hf: Path, out: Path, cache: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf),
           "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(cache)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out / "genai_config.json").exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"the model builder failed (exit {done.returncode}):\n{tail}")
    # The builder copies what the tokenizer needs; the chat template travels with it.
    config = out / "tokenizer_config.json"
    if config.exists():
        data = json.loads(config.read_text())
        if not data.get("chat_template"):
            data["chat_template"] = CHAT_TEMPLATE
            config.write_text(json.dumps(data, indent=2))
