"""A language model as a folder, checked, hashed as a whole and put back together.

A model is an onnxruntime-genai folder: ``genai_config.json``, the decoder's ONNX
file and its external data, and the tokenizer files. The registry stores each file
as a blob and the folder as a *manifest*: canonical JSON listing every file's
relative path, size and sha256. The manifest's own sha256 is the version's digest,
the one a promotion signs, so a signature covers every byte of every file.

Serving puts the folder back (``materialize``) from blobs whose hashes are checked
first, as hard links into the blob store where the file system allows and copies
elsewhere, so a model of many gigabytes is not copied on each load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import BadInput, OperationFailed
from appliance.storage.blobs import BlobStore, sha256_file

MANIFEST_FORMAT = "appliance.llm-folder/1"
CONFIG_FILE = "genai_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MAX_FILES = 1000


@dataclass(frozen=True)
class FolderFile:
    path: str  # relative, '/'-separated
    size: int
    sha256: str


@dataclass
class FolderInfo:
    """What ``models show`` tells of a language model, and the files it is made of."""

    files: list[FolderFile]
    model_type: str
    context_length: int
    vocab_size: int
    parameters: int
    chat_template: bool  # the tokenizer configuration carries one
    eos_token_ids: list[int] = field(default_factory=list)

    def signature(self) -> dict[str, Any]:
        """The registry signature of an LLM version (no tensors: text in, text out)."""
        return {
            "kind": "llm",
            "format": MANIFEST_FORMAT,
            "model_type": self.model_type,
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "parameters": self.parameters,
            "chat_template": self.chat_template,
            "files": len(self.files),
            "size_bytes": sum(f.size for f in self.files),
        }


def is_llm(signature: Any) -> bool:
    return isinstance(signature, dict) and signature.get("kind") == "llm"


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file; a language model folder has {what}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def _int(config: dict[str, Any], key: str, path: Path) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadInput(f"{path}: model.{key} must be a positive integer, not {value!r}")
    return value


def _list_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                raise BadInput(f"{path}: a symbolic link; give the model's files themselves")
            found.append(path)
            if len(found) > MAX_FILES:
                raise BadInput(f"{root}: more than {MAX_FILES} files; is this a model folder?")
    return found


def _onnx_parameters(model_file: Path, root: Path) -> int:
    """Parameters (elements of the initializers) of the decoder, reading only its graph;
    every external data file it names must be there and long enough."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except (onnx.onnx_cpp2py_export.checker.ValidationError, ValueError, OSError,
            RuntimeError) as exc:  # a DecodeError is a ValueError
        raise BadInput(f"{model_file}: not an ONNX model: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError has no stable base
        if type(exc).__name__ != "DecodeError":
            raise
        raise BadInput(f"{model_file}: not an ONNX model: {exc}") from None
    total = 0
    for tensor in model.graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= int(dim)
        total += count
        if uses_external_data(tensor):
            info = ExternalDataInfo(tensor)
            data_file = (model_file.parent / info.location).resolve()
            if not data_file.is_relative_to(root.resolve()):
                raise BadInput(f"{model_file}: tensor {tensor.name} names data outside the "
                               f"folder ({info.location})")
            if not data_file.is_file():
                raise BadInput(f"{data_file}: no such file; {model_file.name} keeps tensor "
                               f"{tensor.name} there")
            end = (info.offset or 0) + (info.length or 0)
            if data_file.stat().st_size < end:
                raise BadInput(f"{data_file}: shorter ({data_file.stat().st_size} bytes) than "
                               f"{model_file.name} says (tensor {tensor.name} ends at {end}); "
                               "the file does not match the model")
    return total


def _check_tokenizer(root: Path) -> bool:
    """The tokenizer loads; True when its configuration carries a chat template."""
    tok_file = root / "tokenizer.json"
    if not tok_file.is_file():
        raise BadInput(f"{tok_file}: no such file; the model's tokenizer is needed to count "
                       "and decode tokens")
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(tok_file))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise BadInput(f"{tok_file}: the tokenizer does not load: "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                       ) from None
    template = False
    config_file = root / "tokenizer_config.json"
    if config_file.is_file():
        config = _load_json(config_file, "a tokenizer configuration")
        template = bool(config.get("chat_template"))
    if (root / "chat_template.jinja").is_file():
        template = True
    return template


def inspect_folder(path: str | os.PathLike[str]) -> FolderInfo:
    """Check a model folder without running it, and hash its files.

    Raises ``BadInput`` naming the file at fault: a missing ``genai_config.json``, a
    decoder that is not ONNX or whose external data is missing or short, a tokenizer
    that does not load."""
    root = Path(path)
    if not root.exists():
        raise BadInput(f"{root}: no such folder")
    if not root.is_dir():
        raise BadInput(f"{root} is a file; a language model is a folder with {CONFIG_FILE}")
    config_path = root / CONFIG_FILE
    config = _load_json(config_path, f"{CONFIG_FILE} (onnxruntime-genai's configuration)")
    model = config.get("model")
    if not isinstance(model, dict):
        raise BadInput(f"{config_path}: no 'model' section")
    decoder = model.get("decoder")
    if not isinstance(decoder, dict) or not isinstance(decoder.get("filename"), str):
        raise BadInput(f"{config_path}: model.decoder.filename names no ONNX file")
    model_file = (root / decoder["filename"])
    if not model_file.resolve().is_relative_to(root.resolve()):
        raise BadInput(f"{config_path}: model.decoder.filename points outside the folder")
    if not model_file.is_file():
        raise BadInput(f"{model_file}: no such file; {CONFIG_FILE} names it as the decoder")
    context_length = _int(model, "context_length", config_path)
    vocab_size = _int(model, "vocab_size", config_path)
    eos = model.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    parameters = _onnx_parameters(model_file, root)
    template = _check_tokenizer(root)
    files = []
    for file in _list_files(root):
        files.append(FolderFile(file.relative_to(root).as_posix(), file.stat().st_size,
                                sha256_file(file)))
    return FolderInfo(files=files, model_type=str(model.get("type", "")),
                      context_length=context_length, vocab_size=vocab_size,
                      parameters=parameters, chat_template=template,
                      eos_token_ids=[int(e) for e in eos_ids])


def manifest_bytes(files: list[FolderFile]) -> bytes:
    """The folder as canonical JSON: its digest names the whole model."""
    doc = {"format": MANIFEST_FORMAT,
           "files": [{"path": f.path, "size": f.size, "sha256": f.sha256}
                     for f in sorted(files, key=lambda f: f.path)]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(data: bytes) -> list[FolderFile]:
    try:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        files = [FolderFile(str(f["path"]), int(f["size"]), str(f["sha256"]))
                 for f in doc["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OperationFailed(f"not a model folder manifest: {exc}") from None
    for f in files:
        parts = f.path.split("/")
        if f.path.startswith("/") or ".." in parts or "" in parts:
            raise OperationFailed(f"model folder manifest names an unsafe path {f.path!r}")
    return files


def store_folder(blobs: BlobStore, root: str | os.PathLike[str],
                 info: FolderInfo) -> str:
    """Put every file in the blob store, checking it is still what was inspected; the
    manifest's digest is returned (and stored last, so it never names a missing blob)."""
    base = Path(root)
    for f in info.files:
        digest = blobs.put_file(base / f.path)
        if digest != f.sha256:
            raise BadInput(f"{base / f.path}: changed while it was being imported; import "
                           "the folder again")
    return blobs.put_bytes(manifest_bytes(info.files))


def materialize(blobs: BlobStore, manifest: bytes, dest: str | os.PathLike[str]) -> Path:
    """The folder described by ``manifest`` at ``dest``, every file's hash checked first.

    Files are hard links into the blob store where possible (one file system), else
    copies; the folder appears whole, by renaming a finished temporary one."""
    files = parse_manifest(manifest)
    target = Path(dest)
    for f in files:
        if not blobs.verify(f.sha256):
            raise OperationFailed(f"model file {f.path} (sha256:{f.sha256[:12]}...) is "
                                  "missing or changed in the blob store; refusing to load it")
    if target.is_dir() and _matches(target, files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for f in files:
            out = staging / f.path
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blobs.path(f.sha256), out)
            except OSError:
                shutil.copyfile(blobs.path(f.sha256), out)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _matches(folder: Path, files: list[FolderFile]) -> bool:
    """Whether an existing folder holds exactly these files, by size and hash."""
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if present != sorted(f.path for f in files):
        return False
    for f in files:
        path = folder / f.path
        if path.stat().st_size != f.size or sha256_file(path) != f.sha256:
            return False
    return True


def folder_digest(files: list[FolderFile]) -> str:
    return hashlib.sha256(manifest_bytes(files)).hexdigest()
