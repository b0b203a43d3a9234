"""The command line: JSON contracts, human output and one-line errors with a non-zero exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saecore import load_run
from saecore.consistency import compare_runs
from saecore.loaders import format_hints
from saecore.text import shape_text
from workspaces import make_workspace, related_decoders

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["SAECORE_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "saecore", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("ws"))


def test_pwmcc_json_contract(workspace, tmp_path):
    paths = [str(workspace / "topk_k8" / f"seed{s}") for s in range(3)]
    out = cli("pwmcc", *paths, "--json", cache=tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert set(res) == {"runs", "sign", "pairs", "mean", "std"}
    assert res["sign"] == "signed" and len(res["runs"]) == 3
    assert [(p["a"], p["b"]) for p in res["pairs"]] == [(0, 1), (0, 2), (1, 2)]
    expected = compare_runs([load_run(p) for p in paths]).pw
    assert res["mean"] == pytest.approx(expected.mean, abs=1e-12)
    assert res["std"] == pytest.approx(expected.std, abs=1e-12)
    assert all(p["n_matched"] == 128 for p in res["pairs"])


def test_pwmcc_keeps_heavy_imports_out_of_its_path(workspace, tmp_path):
    paths = [str(workspace / "topk_k8" / f"seed{s}") for s in range(2)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAECORE_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "saecore", "pwmcc", *paths, "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and json.loads(out.stdout)["pairs"]
    imported = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "saecore.matching" in imported  # the log is real
    heavy = {"pandas", "pyarrow", "streamlit", "sentence_transformers", "transformers", "openai"}
    assert heavy & imported == set()


def test_pwmcc_abs_and_human_table(workspace, tmp_path):
    paths = [str(workspace / "relu_l1" / f"seed{s}") for s in range(2)]
    out = cli("pwmcc", *paths, "--abs", cache=tmp_path)
    assert out.returncode == 0 and "abs cosine" in out.stdout and "mean" in out.stdout
    assert "Exact matching of the pair: scipy's assignment on the dense float64 cosine matrix" in out.stdout
    certified = cli("pwmcc", *paths, "--method", "certified", cache=tmp_path / "certified")
    assert certified.returncode == 0, certified.stderr
    assert "Exact matching of the pair: certified optimal by a dual certificate" in certified.stdout


def test_pwmcc_mixes_formats_with_plain_arrays(workspace, tmp_path):
    a = workspace / "topk_k8" / "seed0"
    np.save(tmp_path / "other.npy", load_run(workspace / "topk_k8" / "seed1").decoder.numpy())
    out = cli("pwmcc", str(a), str(tmp_path / "other.npy"), "--json", cache=tmp_path)
    assert out.returncode == 0, out.stderr
    ref = compare_runs([load_run(a), load_run(workspace / "topk_k8" / "seed1")]).pw.mean
    assert json.loads(out.stdout)["mean"] == pytest.approx(ref, abs=1e-12)


def test_info_json(workspace):
    out = cli("info", str(workspace), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert len(res["runs"]) == 6 and len(res["families"]) == 2
    run = next(r for r in res["runs"] if r["name"] == "topk_k8/seed2")
    assert {"name", "path", "format", "architecture", "d_in", "d_sae", "seed", "step", "family", "warnings"} <= set(run)
    assert (run["format"], run["architecture"], run["d_in"], run["d_sae"], run["seed"]) == ("saelens", "topk", 32, 128, 2)
    assert res["families"][run["family"]] == ["topk_k8/seed0", "topk_k8/seed1", "topk_k8/seed2"]


def test_matches_csv(workspace, tmp_path):
    csv = tmp_path / "m.csv"
    out = cli("matches", str(workspace / "topk_k8" / "seed0"), str(workspace / "topk_k8" / "seed1"), "--csv", str(csv),
              cache=tmp_path)
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(csv)
    assert len(df) == 128 and {"feature_a", "feature_b", "score", "runner_up_b", "runner_up_b_score"} <= set(df.columns)
    assert df["feature_a"].is_unique and df["feature_b"].is_unique


def test_bad_input_is_one_line_and_nonzero(workspace, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cfg.json").write_text("{}")
    (broken / "sae_weights.safetensors").write_bytes(b"garbage")
    out = cli("pwmcc", str(workspace / "topk_k8" / "seed0"), str(broken), "--json")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken" in lines[0] and "d_in" in lines[0]


def test_mismatched_d_in_is_refused(workspace, tmp_path):
    from workspaces import write_saelens

    other = write_saelens(tmp_path / "wide", related_decoders(1, 128, 20)[0])
    out = cli("pwmcc", str(workspace / "topk_k8" / "seed0"), str(other))
    assert out.returncode == 2 and "d_in=32" in out.stderr and "d_in=20" in out.stderr
    assert out.stderr.count("from cfg.json 'd_in'") == 2


def test_info_prints_shapes_and_counts_in_words(workspace):
    out = cli("info", str(workspace))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(shape_text(32, 128)) == 6 and "32 × 128" in out.stdout
    assert "6 runs in 2 families" in out.stdout


def test_info_on_a_folder_without_runs_prints_what_the_loaders_look_for(tmp_path):
    (tmp_path / "readme.txt").write_text("no runs here")
    out = cli("info", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"No SAE runs found in {tmp_path}" in out.stderr
    for label, hint in format_hints():
        assert f"{label}: {hint}" in out.stderr


def test_given_d_in_that_disagrees_with_a_config_names_the_option(workspace, tmp_path):
    np.save(tmp_path / "plain.npy", related_decoders(1, 128, 20)[0].numpy())
    out = cli("pwmcc", str(workspace / "topk_k8" / "seed0"), str(tmp_path / "plain.npy"), "--d-in", "20",
              cache=tmp_path)
    assert out.returncode == 2
    assert "d_in is 32 (from cfg.json 'd_in'), but 20 was asked for (--d-in)" in out.stderr


def test_plain_array_borrowing_d_in_names_the_run_it_came_from(workspace, tmp_path):
    from saecore.cli import load_runs

    np.save(tmp_path / "plain.npy", load_run(workspace / "topk_k8" / "seed1").decoder.numpy())
    runs = load_runs([str(workspace / "topk_k8" / "seed0"), str(tmp_path / "plain.npy")])
    assert runs[1].meta.d_in_source == f"cfg.json 'd_in' of {runs[0].name}"
    assert load_runs([str(tmp_path / "plain.npy")], d_in=32)[0].meta.d_in_source == "--d-in"


@pytest.mark.parametrize(("out_of_range", "phrase"), [
    ([200], "1 index does not fit the run's d_sae 128"),
    ([200, 201, 202], "3 indices do not fit the run's d_sae 128"),
])
def test_import_explanations_counts_out_of_range_indices_grammatically(workspace, tmp_path, out_of_range, phrase):
    rows = [(0, "cats"), (1, "dogs")] + [(i, "far away") for i in out_of_range]
    src = tmp_path / "expl.csv"
    pd.DataFrame(rows, columns=["index", "explanation"]).to_csv(src, index=False)
    out = cli("import-explanations", str(src), "--run", str(workspace / "topk_k8" / "seed0"), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert phrase in out.stdout and f"{len(rows)} records" in out.stdout and "2 features" in out.stdout
