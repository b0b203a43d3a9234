"""Workspace overview tables: runs, comparable families, per-pair summary and checkpoint series."""

from __future__ import annotations

import json

from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.overview import (checkpoint_series, comparable_families, explained_pair, families_table, family_label,
                              family_labels,
                              family_summary, runs_table, seed_text, steps_table)
from saecore.runs import RunMeta
from saecore.workspace import scan
from workspaces import make_workspace, related_decoders, write_saelens


def test_runs_table_lists_every_run_with_shape_and_recorded_l0(tmp_path):
    root = make_workspace(tmp_path / "ws", d_in=8, d_sae=16, seeds=2)
    (root / "topk_k8" / "seed0" / "saecore_meta.json").write_text(json.dumps({"l0": 7.5, "fvu": 0.12}))
    ws = scan(root)
    df = runs_table(ws, {"topk_k8/seed0": 3}, {"relu_l1/seed1": ["dead"]})
    assert len(df) == 4 and set(df["shape"]) == {"8 × 16"}
    row = df[df["run"] == "topk_k8/seed0"].iloc[0]
    assert (row["L0"], row["FVU"], row["explanations"]) == (7.5, 0.12, 3)
    assert df[df["run"] == "relu_l1/seed1"].iloc[0]["warnings"] == "dead"


def test_family_summary_has_one_row_per_pair(tmp_path):
    root = make_workspace(tmp_path / "ws", d_in=8, d_sae=16, seeds=3)
    ws = scan(root)
    results = []
    for key, metas in comparable_families(ws).items():
        comp = compare_runs([load_run(m.path, name=m.name) for m in metas])
        results.append((key, metas, comp.pw))
    df = family_summary(results)
    assert len(df) == 6 and set(df["architecture"]) == {"topk", "standard"}
    assert df.groupby("family")["pw_mcc"].mean().to_dict() == {k: pw.mean for k, _, pw in results}


def test_checkpoints_join_their_final_family(tmp_path):
    decs = related_decoders(2, 16, 8)
    for s, d in enumerate(decs):
        write_saelens(tmp_path / f"seed{s}", d, seed=s)
        write_saelens(tmp_path / f"seed{s}" / "checkpoints" / "1000", d, seed=s)
    ws = scan(tmp_path)
    final = next(k for k, v in ws.families.items() if v[0].step is None)
    assert list(comparable_families(ws)) == [final]
    assert list(comparable_families(ws, final_only=False))[0] == final and len(comparable_families(ws, False)) == 2
    series = checkpoint_series(ws, final)
    assert list(series) == [1000] and len(series[1000]) == 2


def test_steps_table_rows(tmp_path):
    runs = [load_run(write_saelens(tmp_path / f"s{i}", d)).renamed(f"s{i}") for i, d in enumerate(related_decoders(3, 8, 4))]
    pw = compare_runs(runs).pw
    df = steps_table([(10, pw), (20, pw)])
    assert len(df) == 6 and df["step"].tolist() == [10] * 3 + [20] * 3


def test_explained_pair_prefers_the_chosen_runs():
    counts = {"a": 3, "b": 0, "c": 5, "d": 1}
    assert explained_pair(["a", "b", "c", "d"], counts) == ("a", "c")
    assert explained_pair(["a", "b", "c", "d"], counts, ("d", "c")) == ("d", "c")
    assert explained_pair(["a", "b"], counts) is None


def test_final_runs_join_the_series_at_their_token_count(tmp_path):
    decs = related_decoders(2, 16, 8)
    for s, d in enumerate(decs):
        write_saelens(tmp_path / f"seed{s}", d, seed=s)
        (tmp_path / f"seed{s}" / "saecore_meta.json").write_text(json.dumps({"tokens_seen": 5000}))
        write_saelens(tmp_path / f"seed{s}" / "checkpoints" / "1000", d, seed=s)
    ws = scan(tmp_path)
    final = next(k for k, v in ws.families.items() if v[0].step is None)
    series = checkpoint_series(ws, final)
    assert list(series) == [1000, 5000] and all(m.step is None for m in series[5000])


def _meta(seed, arch="topk", k=32, l1=None, d_sae=1536, step=None, hook="blocks.10.hook_resid_post", name=None):
    return RunMeta(name=name or f"{arch}/seed{seed}", path="/x", format="saelens", d_in=576, d_sae=d_sae,
                   architecture=arch, k=k, l1_coefficient=l1, seed=seed, step=step, hook=hook)


def test_family_label_is_short_and_readable():
    assert family_label([_meta(s) for s in range(3)]) == "TopK k=32 · 1,536 latents · seeds 0–2"
    relu = [_meta(s, arch="standard", k=None, l1=0.1, step=149504) for s in (0, 3)]
    assert family_label(relu) == "ReLU + L1 λ=0.1 · 1,536 latents · step 149,504 · seeds 0, 3"
    assert family_label([_meta(None)]) == "TopK k=32 · 1,536 latents"
    assert seed_text(_meta(2)) == "seed 2" and seed_text(_meta(None, name="run-x")) == "run-x"


def test_family_labels_add_only_the_fields_that_tell_families_apart():
    fams = {"a": [_meta(s) for s in range(2)], "b": [_meta(s, hook="blocks.4.hook_resid_post") for s in range(2)],
            "c": [_meta(s, k=64) for s in range(2)]}
    labels = family_labels(fams)
    assert len(set(labels.values())) == 3
    assert labels["a"] == "TopK k=32 · 1,536 latents · blocks.10.hook_resid_post · seeds 0, 1"
    assert labels["b"] == "TopK k=32 · 1,536 latents · blocks.4.hook_resid_post · seeds 0, 1"
    assert labels["c"] == "TopK k=64 · 1,536 latents · seeds 0, 1"  # already unique: nothing added


def test_families_table_has_one_row_per_family_with_label_and_key(tmp_path):
    ws = scan(make_workspace(tmp_path / "ws", d_in=8, d_sae=16, seeds=2))
    df = families_table(ws, family_labels(ws.families))
    assert len(df) == 2 and set(df["key"]) == set(ws.families)
    row = df[df["architecture"] == "topk"].iloc[0]
    assert (row["family"], row["runs"], row["seeds"], row["shape"]) == ("TopK k=8 · 16 latents · seeds 0, 1", 2, "0, 1",
                                                                        "8 × 16")
