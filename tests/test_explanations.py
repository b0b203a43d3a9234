"""Explanation storage and importers, on files written in each source format by the tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workspaces import related_decoders, write_saelens

from saecore.errors import InputError, LoadError
from saecore.explanations import (detect_format, explanations_path, import_explanations, read_explanations,
                                  store_explanations)
from saecore.loaders import load_meta

D_SAE = 64


@pytest.fixture
def run(tmp_path) -> Path:
    """A SAELens run: model tiny-model, hook blocks.4.hook_resid_post, d_sae 64."""
    return write_saelens(tmp_path / "run", related_decoders(1, D_SAE, 16)[0])


def np_record(index: str, text: str, explainer: str = "gpt-4o-mini", layer: str = "4-res-tiny",
              model: str = "tiny-model") -> dict:
    return {"modelId": model, "layer": layer, "index": index, "description": text, "explanationModelName": explainer,
            "typeName": "oai_token-act-pair", "authorId": "x", "embedding": [0.1, 0.2]}


def write_neuronpedia(folder: Path, batches: list[list[dict]]) -> Path:
    (folder / "explanations").mkdir(parents=True)
    for n, batch in enumerate(batches):
        with gzip.open(folder / "explanations" / f"batch-{n}.jsonl.gz", "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in batch)
    return folder


def frame(rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["feature", "explanation", "explainer"]).assign(source="test")


# ---------------------------------------------------------------- storage

def test_read_explanations_is_empty_when_none_are_stored(run):
    df = read_explanations(run)
    assert df.empty and list(df.columns) == ["feature", "explanation", "explainer", "source"]


def test_explanations_live_in_the_run_folder_or_beside_a_single_file(run, tmp_path):
    assert explanations_path(run) == run / "explanations.parquet"
    single = tmp_path / "dec.safetensors"
    single.write_bytes(b"")
    assert explanations_path(single) == tmp_path / "dec.safetensors.explanations.parquet"


def test_store_merges_per_feature_and_explainer(run):
    store_explanations(run, frame([(0, "a", "m1"), (1, "b", "m1"), (0, "x", "m2")]))
    store_explanations(run, frame([(1, "b2", "m1"), (2, "c", "m1")]))
    df = read_explanations(run)
    assert df[["feature", "explanation", "explainer"]].values.tolist() == [
        [0, "a", "m1"], [1, "b2", "m1"], [2, "c", "m1"], [0, "x", "m2"]]


def test_store_replace_drops_the_explainers_old_rows(run):
    store_explanations(run, frame([(0, "a", "m1"), (1, "b", "m1"), (0, "x", "m2")]))
    store_explanations(run, frame([(5, "new", "m1")]), mode="replace")
    df = read_explanations(run)
    assert df[["feature", "explainer"]].values.tolist() == [[5, "m1"], [0, "m2"]]


def test_store_refuses_a_feature_twice_for_one_explainer(run):
    with pytest.raises(InputError, match="feature 3 twice for explainer 'm'"):
        store_explanations(run, frame([(3, "a", "m"), (3, "b", "m")]))


# ---------------------------------------------------------------- Neuronpedia

def test_neuronpedia_bulk_export_with_duplicates_failures_and_out_of_range(run, tmp_path):
    src = write_neuronpedia(tmp_path / "export", [
        [np_record("0", "cats"), np_record("0", "felines", "claude"), np_record("1", "dogs"),
         np_record("2", "Explanation could not be parsed."), np_record("3", "   ")],
        [np_record("4", "only claude", "claude"), np_record("64", "too far"), np_record("5", "fish"),
         np_record("5", "fish again")],
    ])
    report = import_explanations(src, run)
    assert report.format == "neuronpedia" and report.records == 9
    assert report.explainers == {"gpt-4o-mini": 7, "claude": 2}
    assert report.duplicates == [0, 5] and report.failed == [2, 3] and report.out_of_range == [64]
    kept = report.kept.set_index("feature")
    assert kept.loc[0, "explanation"] == "cats"  # the most common explainer wins
    assert kept.loc[5, "explanation"] == "fish"  # then the first in file order
    assert kept.loc[4, "explainer"] == "claude"  # an index only another explainer explains keeps it
    assert report.features == 4 and "d_sae 64" in " ".join(report.warnings)
    stored = read_explanations(run)
    assert sorted(stored["feature"]) == [0, 1, 4, 5] and report.stored_to == str(run / "explanations.parquet")


def test_neuronpedia_choosing_an_explainer_keeps_only_its_explanations(run, tmp_path):
    src = write_neuronpedia(tmp_path / "export", [[np_record("0", "cats"), np_record("0", "felines", "claude"),
                                                    np_record("1", "dogs")]])
    report = import_explanations(src, run, explainer="claude")
    assert report.kept[["feature", "explanation"]].values.tolist() == [[0, "felines"]]
    assert report.duplicates == []
    with pytest.raises(InputError, match="no explanations by 'gpt-5'; explainers in the file: gpt-4o-mini, claude"):
        import_explanations(src, run, explainer="gpt-5")


def test_neuronpedia_export_for_another_layer_and_model_is_reported(run, tmp_path):
    src = write_neuronpedia(tmp_path / "export", [[np_record("0", "cats", layer="7-res-jb", model="gpt2-small")]])
    report = import_explanations(src, run, store=False)
    text = " ".join(report.warnings)
    assert "records name model 'gpt2-small', the run's model is 'tiny-model'" in text
    assert "'7-res-jb' (layer 7), the run hooks 'blocks.4.hook_resid_post' (layer 4)" in text
    assert report.stored_to is None and read_explanations(run).empty


def test_neuronpedia_width_in_the_source_id_is_checked_against_d_sae(run, tmp_path):
    src = write_neuronpedia(tmp_path / "export", [[np_record("0", "cats", layer="4-gemmascope-res-16k")]])
    report = import_explanations(src, run, store=False)
    assert any("(width 16384), the run has d_sae 64" in w for w in report.warnings)


def test_neuronpedia_single_batch_file_and_legacy_json_array(run, tmp_path):
    src = write_neuronpedia(tmp_path / "export", [[np_record("7", "seven")]])
    assert import_explanations(src / "explanations" / "batch-0.jsonl.gz", run, store=False).features == 1
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps([np_record("3", "three"), np_record("9", "nine")]))
    report = import_explanations(legacy, run, store=False)
    assert report.format == "neuronpedia-json" and report.kept["feature"].tolist() == [3, 9]


def test_non_integer_index_is_an_error_naming_the_line(run, tmp_path):
    src = write_neuronpedia(tmp_path / "export", [[np_record("1", "a"), np_record("one", "b")]])
    with pytest.raises(LoadError, match=r"batch-0.jsonl.gz:2: feature index 'one' is not an integer"):
        import_explanations(src, run)


# ---------------------------------------------------------------- delphi, SAEBench, CSV, JSON

def write_delphi(folder: Path, items: dict[str, str | None], hook: str = "layers.4") -> Path:
    (folder / "explanations").mkdir(parents=True)
    for index, text in items.items():
        (folder / "explanations" / f"{hook}_latent{index}.txt").write_text(json.dumps(text))
    return folder


def test_delphi_explanation_folder(run, tmp_path):
    src = write_delphi(tmp_path / "delphi", {"0": "cats", "12": "numbers in lists",
                                             "13": "Explanation could not be parsed."})
    report = import_explanations(src, run)
    assert report.format == "delphi" and report.records == 3
    assert report.kept[["feature", "explanation", "explainer"]].values.tolist() == [
        [0, "cats", "delphi"], [12, "numbers in lists", "delphi"]]
    assert report.failed == [13] and report.source_ids == {"layers.4": 3}


def test_delphi_with_several_hookpoints_reads_the_one_fitting_the_run(run, tmp_path):
    src = write_delphi(tmp_path / "delphi", {"0": "cats"}, hook="layers.4")
    write_delphi(tmp_path / "other", {"0": "dogs", "1": "birds"}, hook="layers.9")
    for p in (tmp_path / "other" / "explanations").iterdir():
        p.rename(src / "explanations" / p.name)
    report = import_explanations(src, run, store=False)
    assert report.kept["explanation"].tolist() == ["cats"]
    assert "read 'layers.4', which fits the run's hook" in report.warnings[0]
    assert import_explanations(src, run, source_id="layers.9", store=False).features == 2


def test_saebench_autointerp_result(run, tmp_path):
    src = tmp_path / "autointerp.json"
    src.write_text(json.dumps({
        "eval_type_id": "autointerp", "eval_config": {"model_name": "tiny-model"}, "sae_lens_id": "blocks.4.hook_resid_post",
        "eval_result_unstructured": {"3": {"explanation": "commas", "score": 0.8}, "70": {"explanation": "x", "score": 0.1},
                                     "5": {"explanation": "", "score": 0.0}},
    }))
    report = import_explanations(src, run, label="gpt-4o-mini")
    assert report.format == "saebench"
    assert report.kept[["feature", "explanation", "explainer"]].values.tolist() == [[3, "commas", "gpt-4o-mini"]]
    assert report.out_of_range == [70] and report.failed == [5] and not any("model" in w for w in report.warnings)


def test_plain_csv_and_json(run, tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text('index,explanation\n2,"quotes, commas"\n"4",four\n-1,negative\n')
    report = import_explanations(csv, run, store=False)
    assert report.kept[["feature", "explanation"]].values.tolist() == [[2, "quotes, commas"], [4, "four"]]
    assert report.out_of_range == [-1]
    js = tmp_path / "e.json"
    js.write_text(json.dumps({"1": "one", "2": None, "8": "eight"}))
    report = import_explanations(js, run, store=False)
    assert report.format == "json" and report.kept["feature"].tolist() == [1, 8] and report.failed == [2]


def test_csv_without_the_needed_columns_names_the_file(run, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("feat,text\n1,a\n")
    with pytest.raises(LoadError, match=r"bad.csv: expected columns 'index' and 'explanation', found feat, text"):
        import_explanations(bad, run)


def test_unknown_source_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LoadError, match="no explanations found"):
        detect_format(tmp_path)
    with pytest.raises(LoadError, match="unknown explanation format"):
        detect_format(tmp_path / "notes.txt")


def test_nothing_usable_is_not_stored(run, tmp_path):
    js = tmp_path / "e.json"
    js.write_text(json.dumps({"100": "far", "1": ""}))
    with pytest.raises(InputError, match="no usable explanation fits run"):
        import_explanations(js, run)


def test_run_can_be_given_as_meta_or_path(run, tmp_path):
    js = tmp_path / "e.json"
    js.write_text(json.dumps({"1": "one"}))
    assert import_explanations(js, load_meta(run), store=False).d_sae == D_SAE
    assert import_explanations(js, str(run), store=False).d_sae == D_SAE


# ---------------------------------------------------------------- CLI

def test_cli_import_json_contract_and_csv(run, tmp_path, capsys):
    from saecore.cli import main

    src = write_neuronpedia(tmp_path / "export", [[np_record("0", "cats"), np_record("0", "felines", "claude"),
                                                    np_record("1", ""), np_record("99", "far")]])
    out_csv = tmp_path / "out.csv"
    code = main(["import-explanations", str(src), "--run", str(run), "--json", "--csv", str(out_csv)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {k: out[k] for k in ("format", "records", "features", "duplicates", "failed", "out_of_range")} == {
        "format": "neuronpedia", "records": 4, "features": 1, "duplicates": 1, "failed": 1, "out_of_range": 1}
    written = pd.read_csv(out_csv)
    assert list(written.columns) == ["feature", "explanation", "explainer"]
    assert written.values.tolist() == [[0, "cats", "gpt-4o-mini"]]
    assert np.array_equal(read_explanations(run)["feature"], [0])


def test_cli_import_bad_source_is_one_line_exit_2(run, tmp_path, capsys):
    from saecore.cli import main

    code = main(["import-explanations", str(tmp_path / "missing.json"), "--run", str(run)])
    assert code == 2 and "missing.json: no such file or folder" in capsys.readouterr().err
