"""Small text-formatting helpers shared by the command line and the dashboard, so both word things alike."""

from __future__ import annotations


def shape_text(d_in: int, d_sae: int) -> str:
    """An SAE's shape as 'd_in × d_sae' with thousands separators, e.g. '576 × 1,536'."""
    return f"{d_in:,} × {d_sae:,}"


def plural(n: int, word: str, plural: str | None = None) -> str:
    """A count with its noun in the right number: '1 run', '3 runs', '1 index', '2 indices'."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


# How architectures and sparsity settings are written for people (anything else is shown as stored).
ARCH_NAMES = {"topk": "TopK", "batchtopk": "BatchTopK", "standard": "ReLU + L1", "relu": "ReLU + L1",
              "jumprelu": "JumpReLU", "gated": "Gated", "matryoshka": "Matryoshka"}
SPARSITY_NAMES = {"l1": "λ", "l0": "target L0", "l0coef": "L0 coef"}


def arch_text(architecture: str) -> str:
    """An architecture as people name it: 'TopK', 'ReLU + L1'."""
    return ARCH_NAMES.get(architecture, architecture)


def sparsity_text(label: str) -> str:
    """A stored sparsity label ('k=32', 'l1=0.1', '-') as people read it: 'k=32', 'λ=0.1', ''."""
    if label in ("-", ""):
        return ""
    name, _, value = label.partition("=")
    return f"{SPARSITY_NAMES.get(name, name)}={value}"


def setting_text(architecture: str, sparsity: str) -> str:
    """Architecture and sparsity together: 'TopK k=32', 'ReLU + L1 λ=0.1'."""
    return " ".join(p for p in (arch_text(architecture), sparsity_text(sparsity)) if p)

