"""Comparing runs: cached results are reused only while the weights are unchanged."""

from __future__ import annotations

import pytest
import torch

from saecore import InputError, load_run
from saecore.consistency import MatchCache, compare_runs
from workspaces import make_workspace, related_decoders, write_saelens


def test_second_comparison_comes_from_cache(tmp_path):
    root = make_workspace(tmp_path / "ws")
    runs = [load_run(root / "topk_k8" / f"seed{s}") for s in range(3)]
    cache = MatchCache(tmp_path / "cache")
    first = compare_runs(runs, cache=cache)
    second = compare_runs(runs, cache=cache)
    assert first.cached == 0 and second.cached == 3
    assert second.pw.to_json() == first.pw.to_json()


def test_changed_file_is_not_served_from_cache(tmp_path):
    a, b = related_decoders(2, 40, 8, noise=0.3)
    write_saelens(tmp_path / "a", a)
    write_saelens(tmp_path / "b", b)
    cache = MatchCache(tmp_path / "cache")
    before = compare_runs([load_run(tmp_path / "a"), load_run(tmp_path / "b")], cache=cache)
    write_saelens(tmp_path / "b", b[torch.randperm(40)] + torch.randn(40, 8))
    after = compare_runs([load_run(tmp_path / "a"), load_run(tmp_path / "b")], cache=cache)
    assert after.cached == 0 and after.pw.mean != pytest.approx(before.pw.mean)


def test_sign_is_part_of_the_cache_key(tmp_path):
    a, b = related_decoders(2, 30, 8, noise=0.8)
    runs = [load_run(write_saelens(tmp_path / "a", a)), load_run(write_saelens(tmp_path / "b", -b))]
    cache = MatchCache(tmp_path / "cache")
    signed = compare_runs(runs, "signed", cache=cache)
    absolute = compare_runs(runs, "abs", cache=cache)
    assert absolute.cached == 0 and absolute.pw.mean > signed.pw.mean


def test_cache_files_are_complete_or_absent(tmp_path):
    a, b = related_decoders(2, 30, 8)
    runs = [load_run(write_saelens(tmp_path / "a", a)), load_run(write_saelens(tmp_path / "b", b))]
    compare_runs(runs, cache=MatchCache(tmp_path / "cache"))
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and not files[0].name.startswith(".")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_meta"])
def test_damaged_cache_entry_is_recomputed_and_replaced(tmp_path, damage):
    import numpy as np

    a, b = related_decoders(2, 30, 8, noise=0.4)
    runs = [load_run(write_saelens(tmp_path / "a", a)), load_run(write_saelens(tmp_path / "b", b))]
    cache = MatchCache(tmp_path / "cache")
    first = compare_runs(runs, cache=cache)
    (entry,) = (tmp_path / "cache").iterdir()
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:200])
    elif damage == "garbage":
        entry.write_bytes(b"not a zip file at all")
    else:
        with entry.open("wb") as f:
            np.savez(f, partner_a=np.zeros(3))
    again = compare_runs(runs, cache=cache)
    assert again.cached == 0 and again.pw.to_json() == first.pw.to_json()
    assert compare_runs(runs, cache=cache).cached == 1  # the damaged entry was overwritten


def test_each_decoder_is_prepared_once_and_every_pair_matches_the_reference(tmp_path, monkeypatch):
    import saecore.consistency as consistency
    from saecore.instances import realistic_pair, with_zero_rows
    from saecore.matching import match_decoders

    decs = [realistic_pair(60, 16, seed=s)[0] for s in range(2)] + [realistic_pair(60, 16, seed=7)[1]]
    decs[1] = with_zero_rows(decs[1], 5, seed=3)
    runs = [load_run(write_saelens(tmp_path / f"r{i}", d)) for i, d in enumerate(decs)]
    prepared = []
    real = consistency.prepare
    monkeypatch.setattr(consistency, "prepare", lambda dec, *a: prepared.append(dec) or real(dec, *a))
    comp = compare_runs(runs, dead="exclude", method="certified")
    assert len(prepared) == 3 and sorted(comp.matches) == [(0, 1), (0, 2), (1, 2)]
    for (i, j), m in comp.matches.items():
        ref = match_decoders(decs[i], decs[j], dead="exclude", method="dense")
        assert dict(zip(m.rows.tolist(), m.cols.tolist())) == dict(zip(ref.rows.tolist(), ref.cols.tolist()))
        assert abs(m.mcc - ref.mcc) < 1e-9 and (m.dead_a, m.dead_b) == (ref.dead_a, ref.dead_b)


def test_progress_reports_every_pair(tmp_path):
    runs = [load_run(p) for p in sorted((make_workspace(tmp_path) / "relu_l1").iterdir())]
    seen = []
    compare_runs(runs, progress=lambda done, total, msg: seen.append((done, total)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)


def test_runs_of_different_width_cannot_be_compared(tmp_path):
    a = load_run(write_saelens(tmp_path / "a", torch.randn(10, 8)))
    b = load_run(write_saelens(tmp_path / "b", torch.randn(10, 6)))
    with pytest.raises(InputError, match="d_in=8.*d_in=6"):
        compare_runs([a, b])
