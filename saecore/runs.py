"""The Run dataclass: one trained SAE's decoder, optional encoder and metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from saecore.text import shape_text

# Metadata fields that define a family (same configuration, different seed).
FAMILY_FIELDS: tuple[str, ...] = ("format", "architecture", "sparsity", "d_in", "d_sae", "model", "hook", "step")


@dataclass(frozen=True)
class RunMeta:
    """What is known about a run without reading its weights."""

    name: str
    path: str
    format: str
    d_in: int
    d_sae: int
    architecture: str = "unknown"
    k: int | None = None
    l1_coefficient: float | None = None
    target_l0: float | None = None
    l0_coefficient: float | None = None  # JumpReLU's L0 penalty weight, when that sets the sparsity
    seed: int | None = None
    step: int | None = None
    model: str | None = None
    hook: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    d_in_source: str = field(default="", compare=False)  # where d_in was read, e.g. "cfg.json 'd_in'"

    @property
    def shape(self) -> str:
        """The shape as printed everywhere, e.g. '576 × 1,536' (d_in, then d_sae)."""
        return shape_text(self.d_in, self.d_sae)

    @property
    def sparsity(self) -> str:
        """One short label for the sparsity setting ('k=32', 'l1=0.004', 'l0=40', 'l0coef=0.1' or '-')."""
        if self.k is not None:
            return f"k={self.k}"
        if self.target_l0 is not None:
            return f"l0={self.target_l0:g}"
        if self.l0_coefficient is not None:
            return f"l0coef={self.l0_coefficient:g}"
        if self.l1_coefficient is not None:
            return f"l1={self.l1_coefficient:g}"
        return "-"

    @property
    def sparsity_value(self) -> float | None:
        """The numeric sparsity setting, for plotting families against it."""
        for v in (self.k, self.target_l0, self.l0_coefficient, self.l1_coefficient):
            if v is not None:
                return float(v)
        return None

    def family_key(self, fields: tuple[str, ...] = FAMILY_FIELDS) -> str:
        """A readable key shared by runs that differ only in seed."""
        parts = []
        for f in fields:
            value = self.sparsity if f == "sparsity" else getattr(self, f)
            if f in ("d_in", "d_sae"):
                continue
            if f == "step":
                value = "final" if value is None else f"step{value}"
            if value is None:
                continue
            parts.append(str(value))
        if "d_in" in fields or "d_sae" in fields:
            parts.insert(min(len(parts), 3), f"{self.d_in}x{self.d_sae}")
        return "/".join(parts)


@dataclass(frozen=True, eq=False)
class Run:
    """A loaded SAE: decoder (d_sae, d_in) float32, feature-major, plus optional extras."""

    meta: RunMeta
    decoder: torch.Tensor
    encoder: torch.Tensor | None = None
    frequencies: np.ndarray | None = None  # firing fraction per feature, when stored

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def d_sae(self) -> int:
        return self.meta.d_sae

    @property
    def d_in(self) -> int:
        return self.meta.d_in

    @property
    def dead_mask(self) -> np.ndarray:
        """True where a decoder row has zero norm (a dead or never-trained feature)."""
        return (self.decoder.norm(dim=1) == 0).numpy()

    @property
    def n_dead(self) -> int:
        return int(self.dead_mask.sum())

    @property
    def fingerprint(self) -> str:
        """Content hash of the decoder, the only weights matching reads: a changed decoder changes it."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256(str(tuple(self.decoder.shape)).encode())  # sha256: the fastest hashlib digest here
            h.update(self.decoder.contiguous().numpy().reshape(-1).view(np.uint8))
            cached = h.hexdigest()[:32]
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def renamed(self, name: str) -> "Run":
        return Run(replace(self.meta, name=name), self.decoder, self.encoder, self.frequencies)

    def warnings(self) -> list[str]:
        """Problems worth showing beside the run (they do not stop matching)."""
        out = []
        if self.n_dead:
            out.append(f"{self.n_dead} zero-norm decoder rows (dead features)")
        return out


def run_label(path: Path, root: Path | None) -> str:
    """A short display name: the path relative to the workspace root, else the folder name."""
    path = Path(path)
    if root is not None:
        try:
            rel = path.resolve().relative_to(Path(root).resolve())
            if str(rel) != ".":
                return rel.as_posix()
        except ValueError:
            pass
    return path.name if path.suffix == "" else path.stem if path.parent.name == "" else path.name
