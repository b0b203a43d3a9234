"""Seeded decoder pairs for tests and benchmarks: realistic cross-seed pairs, random pairs, adversarial cases."""

from __future__ import annotations

import torch


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _unit_rows(n: int, d_in: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def _at_cosine(x: torch.Tensor, cos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Unit rows whose cosine with the unit rows of x is exactly `cos` (a random orthogonal direction mixed in)."""
    z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    z = z - (z * x).sum(1, keepdim=True) * x
    z = z / z.norm(dim=1, keepdim=True)
    c = cos.to(torch.float64).unsqueeze(1)
    return c * x + torch.sqrt(torch.clamp(1 - c * c, min=0.0)) * z


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _add_splits(dec: torch.Tensor, frac: float, cos_range: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Replace a fraction of rows by near-duplicates of other rows of the same dictionary (feature splits)."""
    n = dec.shape[0]
    k = int(round(frac * n))
    if k == 0 or n < 2:
        return dec
    perm = torch.randperm(n, generator=gen)
    targets, sources = perm[:k], perm[k:2 * k] if 2 * k <= n else perm[torch.randint(k, n, (k,), generator=gen)]
    out = dec.clone()
    out[targets] = _at_cosine(dec[sources], _uniform(k, *cos_range, gen), gen)
    return out


def realistic_pair(n: int, d_in: int = 768, seed: int = 0, n_b: int | None = None, partner_frac: float = 0.85,
                   cos_range: tuple[float, float] = (0.8, 0.99), perturbed_frac: float = 0.1,
                   perturbed_range: tuple[float, float] = (0.4, 0.8), split_frac: float = 0.05,
                   split_range: tuple[float, float] = (0.85, 0.97)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float32 decoders (n, d_in) and (n_b, d_in) that look like two seeds of one SAE.

    `partner_frac` of A's features have a partner in B (shuffled): most at cosine in `cos_range`,
    `perturbed_frac` of those only moderately close (`perturbed_range`); the rest of B is fresh.
    Then `split_frac` of each dictionary's rows become near-duplicates of another row of the same
    dictionary (feature splits), which is what pushes optimal partners out of a top-K list.
    """
    n_b = n if n_b is None else n_b
    gen = _generator(seed)
    a = _unit_rows(n, d_in, gen)
    b = _unit_rows(n_b, d_in, gen)
    n_pairs = min(int(round(partner_frac * min(n, n_b))), n, n_b)
    src = torch.randperm(n, generator=gen)[:n_pairs]
    dst = torch.randperm(n_b, generator=gen)[:n_pairs]
    cos = _uniform(n_pairs, *cos_range, gen)
    weak = torch.rand(n_pairs, generator=gen) < perturbed_frac
    cos[weak] = _uniform(int(weak.sum()), *perturbed_range, gen)
    b[dst] = _at_cosine(a[src], cos, gen)
    a = _add_splits(a, split_frac, split_range, gen)
    b = _add_splits(b, split_frac, split_range, gen)
    return a.float(), b.float()


def random_pair(n_a: int, n_b: int | None = None, d_in: int = 768, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent gaussian dictionaries: the worst case for a top-K candidate graph."""
    gen = _generator(seed)
    n_b = n_a if n_b is None else n_b
    return (torch.randn(n_a, d_in, generator=gen).float(), torch.randn(n_b, d_in, generator=gen).float())


def tied_pair(n: int, d_in: int, seed: int = 0, levels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with entries in a few integer levels: many exactly equal cosines, so many optimal matchings."""
    gen = _generator(seed)
    a = torch.randint(-1, levels - 1, (n, d_in), generator=gen).float()
    b = torch.randint(-1, levels - 1, (n, d_in), generator=gen).float()
    a[a.norm(dim=1) == 0, 0] = 1.0
    b[b.norm(dim=1) == 0, 0] = 1.0
    return a, b


def duplicate_rows_pair(n: int, d_in: int, seed: int = 0, n_unique: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """A made of a few rows repeated many times, B a noisy copy of A's unique rows plus random rows."""
    gen = _generator(seed)
    n_unique = max(1, n // 4) if n_unique is None else n_unique
    base = _unit_rows(n_unique, d_in, gen)
    a = base[torch.randint(0, n_unique, (n,), generator=gen)]
    b = _unit_rows(n, d_in, gen)
    b[:n_unique] = _at_cosine(base, _uniform(n_unique, 0.7, 0.95, gen), gen)
    return a.float(), b.float()


def with_zero_rows(dec: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """A copy of `dec` with `count` rows (chosen by seed) set to zero, as dead features are stored."""
    gen = _generator(seed)
    out = dec.clone()
    out[torch.randperm(dec.shape[0], generator=gen)[:count]] = 0
    return out


def adversarial_pairs(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Small named cases that break naive solvers: ties, duplicate rows, rectangular both ways, zero rows."""
    ra, rb = realistic_pair(60, 16, seed=seed, split_frac=0.2)
    wide_a, wide_b = realistic_pair(30, 16, seed=seed + 1, n_b=70)
    return {
        "ties": tied_pair(40, 6, seed),
        "duplicate_rows": duplicate_rows_pair(48, 12, seed),
        "identical": (ra, ra.clone()),
        "rows_fewer": (wide_a, wide_b),
        "rows_more": (wide_b, wide_a),
        "zero_rows": (with_zero_rows(ra, 7, seed), with_zero_rows(rb, 3, seed + 1)),
        "splits": (ra, rb),
        "random_rect": random_pair(25, 40, 8, seed),
    }


def _with_low_bits(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """float32 x with the 15 bits below the bfloat16 rounding bit replaced at random: the result rounds to
    bfloat16 exactly as x truncated does, whatever the new bits are."""
    bits = x.float().view(torch.int32)
    low = torch.randint(0, 0x8000, x.shape, generator=gen, dtype=torch.int32)
    return ((bits & ~0xFFFF) | low).view(torch.float32)


def below_bf16_pair(n: int, d_in: int, seed: int = 0, copies: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (norm below 1, not renormalised) in groups of `copies` variants of n base rows, equal in bfloat16
    but not in float32: A holds every variant and B the same variants shuffled, so each row's optimum is
    its own float32 copy, which only an exact check can tell from the others."""
    gen = _generator(seed)
    base = 0.99 * _unit_rows(n, d_in, gen).float()
    variants = torch.cat([_with_low_bits(base, gen) for _ in range(copies)])
    return variants, variants[torch.randperm(copies * n, generator=gen)]


def worst_rounding_rows(n: int, d_in: int, seed: int = 0) -> torch.Tensor:
    """Rows whose every entry sits just below a bfloat16 rounding midpoint (relative error near 2^-8, all
    towards zero), with mixed signs and magnitudes, scaled by a power of two to norm below 1."""
    gen = _generator(seed)
    exps = torch.randint(-6, 1, (n, d_in), generator=gen).double()
    signs = torch.randint(0, 2, (n, d_in), generator=gen).double() * 2 - 1
    x = signs * (1 + 2.0 ** -8 - 2.0 ** -22) * torch.exp2(exps)
    scale = torch.exp2(-torch.ceil(torch.log2(x.norm(dim=1, keepdim=True))))
    return (x * scale).float()
