"""Many-to-one partners: a split latent's two halves found with their cosines, fan-in counted, brute-force top-k."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saecore import InputError, load_run
from saecore.cli import main
from saecore.consistency import MatchCache
from saecore.partners import decoder_partners, fan_in_counts, find_partners, top_partners
from workspaces import write_saelens

ROOT = Path(__file__).resolve().parents[1]
D_IN = 16
COS_U, COS_V, COS_ABSORBED = 0.8, 0.6, 0.9


def basis() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(D_IN, D_IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return q.T.contiguous()


def split_case() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Small run (6 latents): e0…e4 and a latent close to e1. Large run (9 latents, shuffled): e1…e4, e0 split into
    u (cos 0.8 with e0) and v (cos 0.6), and three unrelated directions. Returns small, large, large's order."""
    e = basis()
    small = torch.stack([e[0], e[1], e[2], e[3], e[4], COS_ABSORBED * e[1] + np.sqrt(1 - COS_ABSORBED ** 2) * e[9]])
    u = COS_U * e[0] + np.sqrt(1 - COS_U ** 2) * e[6]
    v = COS_V * e[0] - np.sqrt(1 - COS_V ** 2) * e[7]
    large = torch.stack([u, v, e[1], e[2], e[3], e[4], e[10], e[11], e[12]])
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(5))
    return small.float(), large[perm].float().contiguous(), perm.numpy()


def where(perm: np.ndarray, original: int) -> int:
    """Position in the shuffled large run of the row that was `original` before shuffling."""
    return int(np.nonzero(perm == original)[0][0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("widths")
    small, large, perm = split_case()
    write_saelens(root / "narrow", small, seed=0)
    write_saelens(root / "wide", large, seed=0)
    return root, perm


def test_split_latent_has_both_halves_as_top_two_and_absorption_shows_as_fan_in(runs, tmp_path):
    root, perm = runs
    narrow, wide = load_run(root / "narrow", name="narrow"), load_run(root / "wide", name="wide")
    res = find_partners(wide, narrow, k=3, cache=MatchCache(tmp_path))  # larger first: swapped
    assert (res.small, res.large, res.swapped, res.k, res.d_small, res.d_large) == ("narrow", "wide", True, 3, 6, 9)
    u, v, e1 = where(perm, 0), where(perm, 1), where(perm, 2)
    assert res.index[0, :2].tolist() == [u, v]
    np.testing.assert_allclose(res.cos[0, :2], [COS_U, COS_V], atol=1e-6)
    assert res.index[5, 0] == e1 and res.cos[5, 0] == pytest.approx(COS_ABSORBED, abs=1e-6)
    counts = res.counts()
    assert counts[e1] == 2 and counts[u] == 1 and counts[v] == 0 and counts.sum() == 6
    assert res.pointers(e1).tolist() == [1, 5]
    # 1-to-1: latent 1 keeps e1, latent 0 takes u; the absorbed latent 5 is pushed elsewhere
    assert res.matched[0] == u and res.matched[1] == e1 and res.matched[5] not in (u, e1)
    assert res.matched_score[1] == pytest.approx(1.0, abs=1e-6)
    frame = res.frame()
    assert frame.columns.tolist() == ["latent", "partner_1", "partner_2", "partner_3", "cos_1", "cos_2", "cos_3",
                                      "matched_partner", "matched_score"]
    assert len(frame) == 6 and (np.diff(frame[["cos_1", "cos_2", "cos_3"]].to_numpy(), axis=1) <= 0).all()
    fan = res.fan_in()
    assert fan.columns.tolist() == ["latent", "fan_in", "matched_partner", "matched_score"] and len(fan) == 9
    assert fan.loc[e1, "fan_in"] == 2 and fan.loc[e1, "matched_partner"] == 1
    js = res.to_json()
    assert json.loads(json.dumps(js)) == js
    assert js["fan_in_histogram"] == {"0": 4, "1": 4, "2": 1} and js["max_fan_in"] == 2
    assert js["top_fan_in"] == [{"latent": e1, "fan_in": 2, "pointers": [1, 5], "matched_partner": 1}]


def test_cosines_are_rescored_in_float64_from_the_stored_rows():
    small, large, _ = split_case()
    index, cos = top_partners(small, large, k=2)
    s, l_ = small.double().numpy(), large.double().numpy()
    exact = (s / np.linalg.norm(s, axis=1)[:, None]) @ (l_ / np.linalg.norm(l_, axis=1)[:, None]).T
    np.testing.assert_allclose(cos, np.take_along_axis(exact, index, axis=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_top_k_equals_brute_force_with_dead_rows_and_tiny_blocks(sign):
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(40, 12, generator=gen), torch.randn(70, 12, generator=gen)
    a[3] = 0.0
    b[[5, 9]] = 0.0
    an, bn = a.double().numpy(), b.double().numpy()
    na, nb = np.linalg.norm(an, axis=1), np.linalg.norm(bn, axis=1)
    cos = (an / np.where(na == 0, 1, na)[:, None]) @ (bn / np.where(nb == 0, 1, nb)[:, None]).T
    cos = np.abs(cos) if sign == "abs" else cos
    cos[:, nb == 0] = -np.inf
    order = np.argsort(-cos, axis=1, kind="stable")[:, :4]
    for budget in (1 << 28, 700):  # one block, and blocks of a couple of rows
        index, got = top_partners(a, b, k=4, sign=sign, budget_bytes=budget)
        live = na > 0
        assert (index[live] == order[live]).all()
        np.testing.assert_allclose(got[live], np.take_along_axis(cos, order, axis=1)[live], atol=1e-12)
        assert (index[3] == -1).all() and np.isnan(got[3]).all()
        assert not np.isin(index, [5, 9]).any()


def test_equal_widths_and_more_partners_than_latents():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    res = decoder_partners(a, b, k=7, names=("a", "b"))
    assert not res.swapped and res.small == "a" and res.k == 7
    assert (res.index[:, :5] >= 0).all() and (res.index[:, 5:] == -1).all() and np.isnan(res.cos[:, 5:]).all()
    assert sorted(res.matched.tolist()) == [0, 1, 2, 3, 4]


def test_fan_in_counts_skips_missing():
    assert fan_in_counts(np.array([2, 2, -1, 0]), 4).tolist() == [1, 0, 2, 0]


def test_different_d_in_is_a_clear_error(runs, tmp_path):
    root, _ = runs
    write_saelens(tmp_path / "other", torch.randn(6, D_IN + 1), seed=0)
    with pytest.raises(InputError, match="d_in=16.*d_in=17|different spaces"):
        find_partners(load_run(root / "narrow"), load_run(tmp_path / "other"))
    with pytest.raises(InputError, match="different d_in"):
        decoder_partners(torch.randn(3, 4), torch.randn(5, 6))
    with pytest.raises(InputError, match="at least 1"):
        top_partners(torch.randn(3, 4), torch.randn(5, 4), k=0)


def test_cli_partners_json_and_csv(runs, tmp_path):
    root, perm = runs
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAECORE_CACHE_DIR": str(tmp_path / "cache")}
    out_csv, fan_csv = tmp_path / "partners.csv", tmp_path / "fan.csv"
    out = subprocess.run([sys.executable, "-m", "saecore", "partners", str(root / "narrow"), str(root / "wide"),
                          "--top", "2", "--json", "--out", str(out_csv), "--fan-in-out", str(fan_csv)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["k"] == 2 and res["d_small"] == 6 and res["d_large"] == 9 and not res["swapped"]
    assert res["top_fan_in"][0]["latent"] == where(perm, 2) and res["top_fan_in"][0]["pointers"] == [1, 5]
    import pandas as pd

    frame = pd.read_csv(out_csv)
    assert frame.loc[0, ["partner_1", "partner_2"]].tolist() == [where(perm, 0), where(perm, 1)]
    assert frame.loc[0, "cos_1"] == pytest.approx(COS_U, abs=1e-6)
    assert pd.read_csv(fan_csv)["fan_in"].sum() == 6


def test_cli_partners_human_output_and_d_in_error(runs, tmp_path, capsys):
    root, _ = runs
    assert main(["partners", str(root / "wide"), str(root / "narrow"), "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "top-3 partners of" in out and "fan-in 2 from [1, 5]" in out
    write_saelens(tmp_path / "other", torch.randn(6, D_IN + 1), seed=0)
    assert main(["partners", str(root / "narrow"), str(tmp_path / "other"), "--no-cache"]) == 2
    assert "different spaces" in capsys.readouterr().err
