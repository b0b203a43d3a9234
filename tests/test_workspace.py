"""Scanning finds runs of every format, groups seeds into families, and reports unreadable paths."""

from __future__ import annotations

import pytest

from saecore import SaecoreError, scan
from saecore.runs import FAMILY_FIELDS
from workspaces import (make_workspace, related_decoders, write_dictionary_learning, write_saelens,
                        write_sparsify)


def test_families_group_seeds(tmp_path):
    ws = scan(make_workspace(tmp_path, seeds=3))
    fams = ws.families
    assert len(ws.runs) == 6 and len(fams) == 2
    for runs in fams.values():
        assert [r.seed for r in runs] == [0, 1, 2]
    assert any("k=8" in key for key in fams)
    assert ws.run("topk_k8/seed1").seed == 1


def test_mixed_formats_and_checkpoints(tmp_path):
    decs = related_decoders(3, 32, 8)
    write_saelens(tmp_path / "lens" / "run", decs[0])
    write_saelens(tmp_path / "lens" / "run" / "checkpoints" / "1000", decs[1])
    write_sparsify(tmp_path / "sp", "layers.2", {0: decs[0], 1: decs[1]})
    write_dictionary_learning(tmp_path / "dl" / "trainer_0", decs[2], checkpoints={10: decs[0], 20: decs[1]})
    ws = scan(tmp_path)
    by_format = {}
    for r in ws.runs:
        by_format.setdefault(r.format, []).append(r)
    assert len(by_format["saelens"]) == 2 and len(by_format["sparsify"]) == 2 and len(by_format["dictionary_learning"]) == 3
    steps = sorted(r.step for r in by_format["dictionary_learning"] if r.step is not None)
    assert steps == [10, 20]
    assert {r.step for r in by_format["saelens"]} == {None, 1000}
    # Checkpoints of one run are not seeds of the final run's family.
    assert ws.family_of(by_format["saelens"][0]) != ws.family_of(by_format["saelens"][1])
    assert not ws.errors


def test_unreadable_run_becomes_an_error_not_a_crash(tmp_path):
    make_workspace(tmp_path, seeds=2)
    bad = tmp_path / "topk_k8" / "seed1" / "cfg.json"
    bad.write_text("{not json")
    ws = scan(tmp_path)
    assert len(ws.runs) == 3
    assert len(ws.errors) == 1 and "not valid JSON" in ws.errors[0].reason and ws.errors[0].path.endswith("seed1")


def test_family_key_can_be_overridden(tmp_path):
    make_workspace(tmp_path, seeds=2)
    fields = tuple(f for f in FAMILY_FIELDS if f not in ("architecture", "sparsity"))
    assert len(scan(tmp_path, family_fields=fields).families) == 1


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(SaecoreError, match="not a folder"):
        scan(tmp_path / "nope")


def test_scan_passes_the_d_in_source_to_plain_arrays(tmp_path):
    import numpy as np

    np.save(tmp_path / "dec.npy", related_decoders(1, 20, 6)[0].numpy())
    ws = scan(tmp_path, d_in=6, d_in_source="--d-in")
    assert [(r.d_in, r.d_in_source) for r in ws.runs] == [(6, "--d-in")]


def test_scan_of_a_folder_without_runs_finds_none(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    ws = scan(tmp_path)
    assert ws.runs == [] and ws.errors == []


def test_stored_activations_are_found_and_not_taken_for_runs(tmp_path):
    import json

    import numpy as np

    root = make_workspace(tmp_path / "ws", d_in=32, d_sae=64, seeds=2)
    store = root / "heldout"
    store.mkdir()
    np.save(store / "acts_00000.npy", np.zeros((10, 32), np.float16))
    manifest = {"complete": True, "d_model": 32, "total_tokens": 10, "n_shards": 1, "shards": {"0": {"n_tokens": 10}},
                "model_name": "tiny-model", "hook_name": "blocks.4.hook_resid_post"}
    (store / "manifest.json").write_text(json.dumps(manifest))
    other = root / "other_hook"
    other.mkdir()
    np.save(other / "acts_00000.npy", np.zeros((99, 32), np.float16))
    (other / "manifest.json").write_text(json.dumps({**manifest, "total_tokens": 99, "hook_name": "blocks.9.x"}))
    ws = scan(root)
    assert not ws.errors and all("heldout" not in r.path and "other_hook" not in r.path for r in ws.runs)
    assert {a.hook for a in ws.activations} == {"blocks.4.hook_resid_post", "blocks.9.x"}
    found = ws.activations_for(*ws.runs)
    assert found is not None and found.path == str(store) and found.n_tokens == 10
    # An unfinished store is neither a run nor a usable store.
    (other / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    assert [a.path for a in scan(root).activations] == [str(store)]
