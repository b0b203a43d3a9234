"""Orphan latents: known orphans found, nearest cosine equal to a brute-force max, dead rows left out, statistics exact."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import mannwhitneyu

from saecore import InputError, load_run, match_decoders
from saecore.cli import main
from saecore.consistency import MatchCache, compare_runs
from saecore.explanations import store_explanations
from saecore.runs import Run, RunMeta
from saecore.orphans import (DEAD, ORPHAN, PARTIAL, SHARED, bootstrap_diff_ci, classify, compare_groups,
                             compared_columns, comparison_frame, group_values, run_counts_frame,
                             family_orphans, find_orphans, nearest_in_other, orphan_table)
from workspaces import related_decoders, write_saelens

D_IN = 32
N_SHARED = 8
ORPHAN_FREQ, SHARED_FREQ, PARTIAL_FREQ = 1e-4, 1e-2, 1e-3


def basis(seed: int = 0) -> torch.Tensor:
    """32 orthonormal directions."""
    q, _ = torch.linalg.qr(torch.randn(D_IN, D_IN, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()


def family_decoders(noise: float = 0.02) -> tuple[list[torch.Tensor], list[list[str]], list[np.ndarray]]:
    """Three runs sharing 8 directions, one unique direction each; run 0 has a dead row, runs 1 and 2 share one
    direction run 0 lacks. Returns decoders, expected status per row and frequencies (low for orphans)."""
    e = basis()
    gen = torch.Generator().manual_seed(1)
    extra = {0: None, 1: e[11], 2: e[11]}
    decs, statuses, freqs = [], [], []
    for r in range(3):
        rows = [e[i] for i in range(N_SHARED)] + [e[8 + r]]
        status = [SHARED] * N_SHARED + [ORPHAN]
        freq = [SHARED_FREQ * (1 + i) for i in range(N_SHARED)] + [ORPHAN_FREQ]
        if extra[r] is None:
            rows.append(torch.zeros(D_IN))
            status.append(DEAD)
        else:
            rows.append(extra[r])
            status.append(PARTIAL)
        freq.append(PARTIAL_FREQ)
        dec = torch.stack(rows)
        live = dec.norm(dim=1, keepdim=True) > 0
        dec = dec + noise * torch.randn(dec.shape, generator=gen) * live
        perm = torch.randperm(len(rows), generator=gen)
        decs.append(dec[perm].contiguous())
        statuses.append([status[i] for i in perm.tolist()])
        freqs.append(np.asarray(freq)[perm.numpy()])
    return decs, statuses, freqs


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[Path, list[list[str]], list[np.ndarray]]:
    root = tmp_path_factory.mktemp("family")
    decs, statuses, freqs = family_decoders()
    for r, (dec, freq) in enumerate(zip(decs, freqs)):
        write_saelens(root / f"seed{r}", dec, seed=r, frequencies=freq)
    return root, statuses, freqs


def load_family(root: Path) -> list:
    return [load_run(root / f"seed{r}", name=f"seed{r}") for r in range(3)]


@pytest.mark.parametrize("dead", ["exclude", "include"])
def test_known_orphans_shared_partial_and_dead_are_found(family, tmp_path, dead):
    root, statuses, _ = family
    report = family_orphans(load_family(root), 0.7, dead=dead, cache=MatchCache(tmp_path))
    for r, expected in zip(report.per_run, statuses):
        assert r.table["status"].tolist() == expected
        assert r.table["orphan"].tolist() == [s == ORPHAN for s in expected]
    counts = [r.to_json()["counts"] for r in report.per_run]
    assert counts[0] == {ORPHAN: 1, SHARED: 8, PARTIAL: 0, DEAD: 1}
    assert counts[1] == counts[2] == {ORPHAN: 1, SHARED: 8, PARTIAL: 1, DEAD: 0}
    assert report.per_run[0].n_live == 9 and report.per_run[0].orphan_fraction == pytest.approx(1 / 9)
    dead_row = report.per_run[0].table[report.per_run[0].table["dead"]]
    assert dead_row[["best_min", "best_mean", "best:seed1", "best:seed2"]].isna().all(axis=None)
    assert (dead_row[["nearest:seed1", "nearest:seed2"]] == -1).all(axis=None)


def test_threshold_moves_latents_between_groups(family, tmp_path):
    root, statuses, _ = family
    runs = load_family(root)
    every_shared = family_orphans(runs, -1.0, cache=MatchCache(tmp_path), side_data=False)
    every_orphan = family_orphans(runs, 1.01, cache=MatchCache(tmp_path), side_data=False)
    for lo, hi, expected in zip(every_shared.per_run, every_orphan.per_run, statuses):
        dead = [s == DEAD for s in expected]
        assert lo.table["status"].tolist() == [DEAD if d else SHARED for d in dead]
        assert hi.table["status"].tolist() == [DEAD if d else ORPHAN for d in dead]
    assert every_orphan.cached == 3 and "frequency" not in every_orphan.per_run[0].table


def test_best_score_is_the_brute_force_nearest_cosine():
    decs = related_decoders(3, 60, 16, noise=0.8, seed=3)
    decs[1][7] = 0.0
    runs = [Run(RunMeta(f"r{i}", f"/nowhere/r{i}", "arrays", 16, 60), d) for i, d in enumerate(decs)]
    for dead in ("exclude", "include"):
        comp = compare_runs(runs, dead=dead)
        report = find_orphans(comp, 0.5)
        for i, r in enumerate(report.per_run):
            for j in range(3):
                if j == i:
                    continue
                a, b = decs[i].double().numpy(), decs[j].double().numpy()
                na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
                cos = (a / np.where(na == 0, 1, na)[:, None]) @ (b / np.where(nb == 0, 1, nb)[:, None]).T
                cos[:, nb == 0] = -np.inf  # a dead row is nobody's neighbour
                expected = np.where(na == 0, np.nan, cos.max(axis=1))
                got = r.table[f"best:r{j}"].to_numpy()
                np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)
                nearest = r.table[f"nearest:r{j}"].to_numpy()
                live = na > 0
                assert (nearest[live] == cos.argmax(axis=1)[live]).all()


def test_nearest_of_unmatched_rows_of_a_wider_run_is_the_runner_up():
    a = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    m = match_decoders(a, b)
    index, best = nearest_in_other(m)
    cos = torch.nn.functional.normalize(a.double(), dim=1) @ torch.nn.functional.normalize(b.double(), dim=1).T
    np.testing.assert_allclose(best, cos.max(dim=1).values.numpy(), atol=1e-6)
    assert (index == cos.argmax(dim=1).numpy()).all()
    assert (m.partner_a == -1).sum() == 7  # seven rows had no 1-to-1 partner and still got their nearest


def test_classify_rules():
    best = np.array([[0.9, 0.8], [0.1, 0.69], [0.9, 0.2], [np.nan, 0.1], [0.7, 0.7], [0.9, 0.9]])
    dead = np.array([False, False, False, False, False, True])
    assert classify(best, 0.7, dead).tolist() == [SHARED, ORPHAN, PARTIAL, ORPHAN, SHARED, DEAD]


def test_group_comparison_statistics_are_exact():
    table = pd.DataFrame({
        "status": [ORPHAN] * 6 + [SHARED] * 4 + [PARTIAL, DEAD],
        "value": [1.0, 2.0, 3.0, 4.0, 100.0, np.nan, 5.0, 6.0, 7.0, 8.0, 50.0, 1000.0],
    })
    g = compare_groups(table, "value", "hand-made", n_boot=4000, seed=3)
    assert (g.n_orphan, g.n_shared, g.n_partial, g.n_dead, g.n_missing) == (5, 4, 1, 1, 1)
    assert g.mean_orphan == 22.0 and g.mean_shared == 6.5 and g.diff == 15.5
    assert g.median_orphan == 3.0 and g.median_shared == 6.5
    ref = mannwhitneyu([1, 2, 3, 4, 100], [5, 6, 7, 8], alternative="two-sided")
    assert g.mann_whitney_u == ref.statistic and g.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert g.ci_low < g.diff < g.ci_high
    assert (g.ci_low, g.ci_high) == bootstrap_diff_ci([1, 2, 3, 4, 100], [5, 6, 7, 8], 4000, seed=3)
    # the CI is the percentile interval of the bootstrap distribution: its bounds are attainable differences
    assert g.ci_low >= 1 - 8 and g.ci_high <= 100 - 5
    out = g.to_json()
    assert json.loads(json.dumps(out)) == out and out["label"] == "hand-made"
    with pytest.raises(InputError, match="no column 'missing'"):
        compare_groups(table, "missing")


def test_group_comparison_with_an_empty_group_is_nan_not_an_error():
    table = pd.DataFrame({"status": [SHARED, SHARED], "value": [1.0, 2.0]})
    g = compare_groups(table, "value")
    assert g.n_orphan == 0 and np.isnan(g.mean_orphan) and np.isnan(g.p_value) and np.isnan(g.ci_low)
    assert g.to_json()["p_value"] is None


def test_side_data_frequency_explanations_and_scores_are_joined(family, tmp_path):
    root, statuses, freqs = family
    store_explanations(root / "seed0", pd.DataFrame({"feature": [0, 3], "explanation": ["cats", "dogs"],
                                                     "explainer": ["x", "x"], "source": ["test", "test"]}))
    scores = [pd.DataFrame({"feature": np.arange(10), "detection": np.arange(10) / 10.0}), None, None]
    runs = load_family(root)
    report = family_orphans(runs, cache=MatchCache(tmp_path), scores=scores)
    t0 = report.per_run[0].table
    assert t0.loc[[0, 3], "explanation"].tolist() == ["cats", "dogs"] and t0["explanation"].isna().sum() == 8
    np.testing.assert_allclose(t0["frequency"], freqs[0], rtol=1e-5)
    assert t0["detection"].tolist() == list(np.arange(10) / 10.0)
    assert "detection" not in report.per_run[1].table
    # pooled frequency comparison: 3 orphans, 24 shared, every mean and median exact
    pooled = report.compare("frequency")[-1]
    table = report.table()
    orph = table.loc[table["status"] == ORPHAN, "frequency"].to_numpy()
    shared = table.loc[table["status"] == SHARED, "frequency"].to_numpy()
    assert (pooled.label, pooled.n_orphan, pooled.n_shared, pooled.n_dead) == ("pooled", 3, 24, 1)
    assert pooled.mean_orphan == pytest.approx(ORPHAN_FREQ, rel=1e-5)
    assert pooled.mean_shared == np.mean(shared) and pooled.median_orphan == np.median(orph)
    assert pooled.diff < 0 and pooled.ci_high < 0
    js = report.to_json(["frequency", "detection"])
    assert json.loads(json.dumps(js)) == js
    assert len(js["comparisons"]["frequency"]) == 4 and len(js["comparisons"]["detection"]) == 2
    detection = report.compare("detection")
    assert [g.label for g in detection] == ["seed0", "pooled"] and detection[0].n_orphan == 1
    with pytest.raises(InputError, match="no run has a column 'fuzzing'"):
        report.compare("fuzzing")


def test_side_data_with_a_clashing_column_is_refused(family, tmp_path):
    root, _, _ = family
    bad = [pd.DataFrame({"feature": np.arange(10), "status": 1.0}), None, None]
    with pytest.raises(InputError, match="repeats columns"):
        family_orphans(load_family(root), cache=MatchCache(tmp_path), scores=bad)


def test_stacked_table_has_one_column_per_run(family, tmp_path):
    root, _, _ = family
    report = family_orphans(load_family(root), cache=MatchCache(tmp_path), side_data=False)
    table = report.table()
    assert len(table) == 30 and table.columns[:3].tolist() == ["run", "feature", "status"]
    assert table.loc[table["run"] == "seed0", "best:seed0"].isna().all()
    assert str(table["nearest:seed1"].dtype) == "Int64"


def test_orphan_table_of_one_run(family, tmp_path):
    root, statuses, _ = family
    comp = compare_runs(load_family(root), dead="exclude", cache=MatchCache(tmp_path))
    r = orphan_table(comp, 2, 0.7)
    assert r.run == "seed2" and r.others == ["seed0", "seed1"] and r.table["status"].tolist() == statuses[2]


def test_cli_orphans_on_a_family_folder_json(family, tmp_path, capsys):
    root, statuses, _ = family
    out_csv = tmp_path / "orphans.csv"
    assert main(["orphans", str(root), "--json", "--cache", str(tmp_path), "--out", str(out_csv)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["threshold"] == 0.7 and len(res["families"]) == 1
    fam = res["families"][0]
    assert fam["runs"] == ["seed0", "seed1", "seed2"]
    assert [r["counts"][ORPHAN] for r in fam["per_run"]] == [1, 1, 1]
    assert [r["counts"][DEAD] for r in fam["per_run"]] == [1, 0, 0]
    pooled = fam["comparisons"]["frequency"][-1]
    assert pooled["label"] == "pooled" and pooled["n_orphan"] == 3 and pooled["n_shared"] == 24
    csv = pd.read_csv(out_csv)
    assert len(csv) == 30 and csv["status"].tolist() == sum(statuses, [])


def test_cli_orphans_explicit_runs_human_output_and_threshold(family, tmp_path, capsys):
    root, _, _ = family
    paths = [str(root / f"seed{r}") for r in range(3)]
    assert main(["orphans", *paths, "--threshold", "0.999", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "orphan = best signed cosine < 0.999" in out and "frequency, orphan vs shared" in out
    assert "pooled" in out


def test_cli_orphans_joins_scores_when_asked(family, tmp_path, capsys, monkeypatch):
    root, _, _ = family
    fake = types.ModuleType("saecore.scoring")
    fake.scores_table = lambda path: pd.DataFrame({"feature": np.arange(10), "fuzzing": np.linspace(0, 1, 10)})
    monkeypatch.setitem(sys.modules, "saecore.scoring", fake)
    assert main(["orphans", str(root), "--scores", "--compare", "fuzzing", "--json", "--cache", str(tmp_path)]) == 0
    fam = json.loads(capsys.readouterr().out)["families"][0]
    assert list(fam["comparisons"]) == ["fuzzing"] and fam["comparisons"]["fuzzing"][-1]["n_orphan"] == 3


def test_cli_orphans_refuses_a_single_run(family, capsys):
    root, _, _ = family
    assert main(["orphans", str(root / "seed0")]) == 2
    assert "single run" in capsys.readouterr().err


def test_view_helpers_counts_columns_comparisons_and_values(family, tmp_path):
    root, _, freqs = family
    scores = [pd.DataFrame({"feature": np.arange(10), "detection": np.arange(10) / 10.0}), None, None]
    report = family_orphans(load_family(root), cache=MatchCache(tmp_path), scores=scores)
    counts = run_counts_frame(report)
    assert counts["run"].tolist() == ["seed0", "seed1", "seed2", "all runs"]
    assert counts.iloc[-1][["latents", DEAD, ORPHAN, SHARED, PARTIAL]].tolist() == [30, 1, 3, 24, 2]
    assert counts.iloc[-1]["orphan_fraction"] == pytest.approx(3 / 29)
    columns = compared_columns(report)
    assert columns == {"frequency": ("activation frequency", True), "detection": ("detection score", False)}
    frame = comparison_frame(report, columns, n_boot=200)
    assert frame["measure"].tolist() == ["activation frequency"] * 4 + ["detection score"] * 2
    assert frame["run"].tolist() == ["seed0", "seed1", "seed2", "all runs", "seed0", "all runs"]
    pooled = report.compare("frequency", 200)[-1]
    assert frame.iloc[3]["mean_orphan"] == pooled.mean_orphan and frame.iloc[3]["p_value"] == pooled.p_value
    values = group_values(report, "detection")
    assert list(values) == ["seed0"] and len(values["seed0"][ORPHAN]) == 1 and len(values["seed0"][SHARED]) == 8


def test_orphans_lists_orphan_rows_least_matched_first():
    import pandas as pd

    from saecore.orphans import RunOrphans

    table = pd.DataFrame({"feature": [0, 1, 2, 3], "orphan": [True, False, True, True],
                          "best_min": [0.3, 0.9, 0.1, 0.3]})
    assert RunOrphans("A", ["B"], 0.7, table).orphans()["feature"].tolist() == [2, 0, 3]
