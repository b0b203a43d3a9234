"""dictionary_learning folders: config.json + ae.pt, checkpoints/ae_<step>.pt as extra runs."""

from __future__ import annotations

import re
from pathlib import Path

from saecore.errors import LoadError
from saecore.loaders.tensors import as_int, feature_major, pick, read_json, read_torch
from saecore.runs import Run, RunMeta

NAME = "dictionary_learning"
CONFIG = "config.json"
WEIGHTS = "ae.pt"
CHECKPOINT = re.compile(r"^ae_(\d+)\.pt$")
LABEL = "dictionary_learning"
HINT = f"a trainer folder with {WEIGHTS} and {CONFIG}; checkpoints/ae_<step>.pt files in it are runs too"

# dict_class -> (architecture, decoder stored as nn.Linear (d_in, d_sae)?)
CLASSES = {
    "AutoEncoder": ("standard", True),
    "AutoEncoderNew": ("standard", True),
    "GatedAutoEncoder": ("gated", True),
    "AutoEncoderTopK": ("topk", True),
    "BatchTopKSAE": ("batchtopk", True),
    "JumpReluAutoEncoder": ("jumprelu", False),
    "MatryoshkaBatchTopKSAE": ("matryoshka_batchtopk", False),
}


def matches(path: Path) -> bool:
    if path.is_dir():
        return (path / WEIGHTS).exists()
    return bool(CHECKPOINT.match(path.name)) and path.parent.name == "checkpoints"


def _run_dir(path: Path) -> tuple[Path, Path, int | None]:
    """(trainer folder, weights file, checkpoint step or None)."""
    if path.is_dir():
        return path, path / WEIGHTS, None
    return path.parent.parent, path, int(CHECKPOINT.match(path.name).group(1))


def meta(path: Path) -> RunMeta:
    run_dir, _, step = _run_dir(path)
    cfg_path = run_dir / CONFIG
    cfg = read_json(cfg_path)
    trainer = cfg.get("trainer")
    if not isinstance(trainer, dict):
        raise LoadError(cfg_path, "config has no 'trainer' object")
    for key in ("activation_dim", "dict_size"):
        if key not in trainer:
            raise LoadError(cfg_path, f"trainer config has no {key!r}")
    dict_class = str(trainer.get("dict_class", "AutoEncoder"))
    arch = CLASSES.get(dict_class, (dict_class, True))[0]
    layer = trainer.get("layer")
    hook = trainer.get("submodule_name") or (f"layer {layer}" if layer is not None else None)
    return RunMeta(
        name=run_dir.name if step is None else f"{run_dir.name}@{step}", path=str(path), format=NAME,
        d_in=as_int(trainer["activation_dim"], cfg_path, "activation_dim"),
        d_in_source=f"{CONFIG} 'trainer.activation_dim'",
        d_sae=as_int(trainer["dict_size"], cfg_path, "dict_size"), architecture=arch,
        k=int(trainer["k"]) if trainer.get("k") is not None else None,
        l1_coefficient=trainer.get("l1_penalty"), target_l0=trainer.get("target_l0"),
        seed=int(trainer["seed"]) if trainer.get("seed") is not None else None, step=step,
        model=trainer.get("lm_name"), hook=hook, extra={"dict_class": dict_class},
    )


def load(path: Path, with_encoder: bool = True) -> Run:
    m = meta(path)
    _, weights, _ = _run_dir(path)
    state = read_torch(weights)
    linear = CLASSES.get(m.extra["dict_class"], ("", True))[1]
    if "W_dec" in state:
        decoder = feature_major(state["W_dec"], m.d_in, weights, "W_dec", "features_first", m.d_sae)
        enc = state.get("W_enc") if with_encoder else None
        encoder = None if enc is None else feature_major(enc, m.d_in, weights, "W_enc", "inputs_first", m.d_sae)
    else:
        # nn.Linear stores weight as (out, in): decoder (d_in, d_sae), encoder (d_sae, d_in).
        dec = pick(state, weights, "decoder.weight")
        decoder = feature_major(dec, m.d_in, weights, "decoder.weight", "inputs_first" if linear else "features_first", m.d_sae)
        enc = state.get("encoder.weight") if with_encoder else None
        encoder = None if enc is None else feature_major(enc, m.d_in, weights, "encoder.weight", "features_first", m.d_sae)
    return Run(m, decoder, encoder)


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a trainer folder, in step order."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))
