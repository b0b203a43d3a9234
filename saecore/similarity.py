"""Cosine similarity of decoder rows on a torch device, blockwise so memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator

import torch

SIGNS = ("signed", "abs")
DEFAULT_BLOCK_BYTES = 256 * 1024 * 1024


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; an explicit 'cuda' without a GPU is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but no CUDA GPU is available (use 'cpu' or 'auto')")
    return dev


def check_sign(sign: str) -> str:
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    return sign


def normalize_rows(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm rows (zero rows stay zero, never 0/0) and the mask of zero rows, in the input's dtype.

    Norms are summed in float64 and rounded once, and the division is correctly rounded, so the unit
    rows do not depend on how a device orders its float32 sums.
    """
    norms = torch.linalg.vector_norm(matrix, dim=1, keepdim=True, dtype=torch.float64).to(matrix.dtype)
    dead = (norms == 0).flatten()
    return matrix / torch.where(norms == 0, torch.ones_like(norms), norms), dead


def apply_sign(s: torch.Tensor, sign: str) -> torch.Tensor:
    return s.abs() if sign == "abs" else s


def block_rows(n_cols: int, dtype: torch.dtype, budget_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """How many rows of an (·, n_cols) similarity block fit in the memory budget."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, budget_bytes // max(1, n_cols * itemsize))


def similarity_blocks(a_n: torch.Tensor, b_n: torch.Tensor, sign: str = "signed", dtype: torch.dtype = torch.float32,
                      budget_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first row, S[rows, :]) for S = a_n · b_nᵀ on a_n's device, one bounded block at a time.

    Every block is written into the same buffer (fresh pages cost more than the scan that reads
    them), so a block is only valid until the next one is requested.
    """
    b = b_n.to(dtype)
    n = a_n.shape[0]
    step = max(1, min(n, block_rows(b.shape[0], dtype, budget_bytes)))
    buf = torch.empty((step, b.shape[0]), dtype=dtype, device=a_n.device)
    for start in range(0, n, step):
        block = buf[: min(step, n - start)]
        torch.matmul(a_n[start:start + step].to(dtype), b.T, out=block)
        yield start, (block.abs_() if sign == "abs" else block)


def dense_similarity(a_n: torch.Tensor, b_n: torch.Tensor, sign: str = "signed",
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The whole similarity matrix (reference path and small problems only)."""
    return apply_sign(a_n.to(dtype) @ b_n.to(dtype).T, sign)
