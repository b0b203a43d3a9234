"""Every on-disk format loads to the same feature-major float32 decoder, and bad input names the file."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saecore import LoadError, detect, load_meta, load_run
from saecore.loaders import (FORMATS, arrays, dictionary_learning, format_hints, gemmascope, no_runs_message, saelens,
                             sparsify)
from workspaces import (related_decoders, write_dictionary_learning, write_gemmascope, write_saelens,
                        write_sparsify)

D_SAE, D_IN = 48, 16


@pytest.fixture
def decoder() -> torch.Tensor:
    return related_decoders(1, D_SAE, D_IN, seed=3)[0]


def test_saelens_v6_round_trip(tmp_path, decoder):
    freq = np.linspace(1e-4, 0.2, D_SAE)
    write_saelens(tmp_path / "run", decoder, architecture="topk", k=8, seed=7, frequencies=freq)
    run = load_run(tmp_path / "run")
    assert detect(tmp_path / "run") == "saelens"
    assert torch.equal(run.decoder, decoder)
    assert run.encoder.shape == (D_SAE, D_IN)
    m = run.meta
    assert (m.architecture, m.k, m.seed, m.d_in, m.d_sae) == ("topk", 8, 7, D_IN, D_SAE)
    assert m.hook == "blocks.4.hook_resid_post" and m.model == "tiny-model"
    np.testing.assert_allclose(run.frequencies, freq, rtol=1e-5)


def test_saelens_legacy_flat_config(tmp_path, decoder):
    write_saelens(tmp_path / "old", decoder, architecture="topk", k=16, legacy=True)
    m = load_run(tmp_path / "old").meta
    assert (m.architecture, m.k, m.hook, m.extra["sae_lens_version"]) == ("topk", 16, "blocks.4.hook_resid_post", "legacy")


def test_saelens_bf16_is_cast_to_float32(tmp_path, decoder):
    write_saelens(tmp_path / "bf", decoder, dtype=torch.bfloat16)
    run = load_run(tmp_path / "bf")
    assert run.decoder.dtype == torch.float32
    assert torch.allclose(run.decoder, decoder, atol=2e-2)


def test_saelens_checkpoint_folder_has_a_step(tmp_path, decoder):
    write_saelens(tmp_path / "run" / "checkpoints" / "2048000", decoder)
    assert load_run(tmp_path / "run" / "checkpoints" / "2048000").meta.step == 2048000


def test_sparsify_seed_folders_bf16(tmp_path):
    decs = dict(enumerate(related_decoders(2, D_SAE, D_IN)))
    paths = write_sparsify(tmp_path / "save", "layers.6", decs)
    runs = [load_run(p) for p in paths]
    assert [r.meta.seed for r in runs] == [0, 1]
    assert all(r.meta.hook == "layers.6" and r.meta.format == "sparsify" for r in runs)
    assert torch.allclose(runs[1].decoder, decs[1], atol=3e-2)


@pytest.mark.parametrize("dict_class", ["AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder",
                                        "MatryoshkaBatchTopKSAE"])
def test_dictionary_learning_classes_orient_decoder(tmp_path, decoder, dict_class):
    write_dictionary_learning(tmp_path / "trainer_0", decoder, dict_class=dict_class, seed=3)
    run = load_run(tmp_path / "trainer_0")
    assert torch.equal(run.decoder, decoder)
    assert run.meta.seed == 3


def test_dictionary_learning_square_decoder_uses_documented_layout(tmp_path):
    square = torch.randn(D_IN, D_IN)
    write_dictionary_learning(tmp_path / "t", square, dict_class="AutoEncoder")
    assert torch.equal(load_run(tmp_path / "t").decoder, square)


def test_dictionary_learning_checkpoints_load_with_step(tmp_path, decoder):
    write_dictionary_learning(tmp_path / "trainer_0", decoder, checkpoints={100: decoder * 2})
    run = load_run(tmp_path / "trainer_0" / "checkpoints" / "ae_100.pt")
    assert run.meta.step == 100 and torch.equal(run.decoder, decoder * 2)


@pytest.mark.parametrize("v2", [False, True])
def test_gemmascope_params(tmp_path, decoder, v2):
    folder = write_gemmascope(tmp_path / "layer_12" / "width_48" / "average_l0_82", decoder, v2=v2)
    run = load_run(folder)
    assert torch.equal(run.decoder, decoder)
    assert (run.meta.architecture, run.meta.target_l0, run.meta.hook) == ("jumprelu", 82, "layer_12")


def test_gemmascope_seed_twin_folder(tmp_path, decoder):
    run = load_run(write_gemmascope(tmp_path / "layer_3_width_48_seed_1", decoder))
    assert run.meta.seed == 1


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".safetensors"])
def test_plain_arrays_need_and_use_d_in(tmp_path, decoder, suffix):
    path = tmp_path / f"dec{suffix}"
    stored = decoder.T.contiguous()  # stored (d_in, d_sae): must be oriented by d_in, not by the longer axis
    if suffix == ".npy":
        np.save(path, stored.numpy())
    elif suffix == ".npz":
        np.savez(path, W_dec=stored.numpy())
    elif suffix == ".pt":
        torch.save({"W_dec": stored}, path)
    else:
        save_file({"W_dec": stored}, str(path))
    with pytest.raises(LoadError, match="d_in"):
        load_run(path)
    assert torch.equal(load_run(path, d_in=D_IN).decoder, decoder)


def test_plain_array_sidecar_states_d_in(tmp_path, decoder):
    np.save(tmp_path / "dec.npy", decoder.numpy())
    (tmp_path / "dec.npy.json").write_text(json.dumps({"d_in": D_IN, "seed": 4}))
    run = load_run(tmp_path / "dec.npy")
    assert run.meta.seed == 4 and torch.equal(run.decoder, decoder)


def test_truncated_safetensors_names_the_file(tmp_path, decoder):
    write_saelens(tmp_path / "run", decoder)
    weights = tmp_path / "run" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(LoadError, match=r"sae_weights\.safetensors.*(corrupt|truncated)"):
        load_run(tmp_path / "run")


def test_missing_config_is_reported(tmp_path, decoder):
    write_saelens(tmp_path / "run", decoder)
    (tmp_path / "run" / "cfg.json").unlink()
    with pytest.raises(LoadError, match=r"cfg\.json: file is missing"):
        load_run(tmp_path / "run")


def test_pickle_with_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"W_dec": Evil()}, f)
    with pytest.raises(LoadError, match="evil.pt"):
        load_run(path, d_in=D_IN)


def test_nan_rows_are_rejected(tmp_path, decoder):
    bad = decoder.clone()
    bad[3, 2] = float("nan")
    bad[9, 0] = float("inf")
    write_saelens(tmp_path / "run", bad)
    with pytest.raises(LoadError, match=r"NaN or Inf in 2 rows \(first: \[3, 9\]\)"):
        load_run(tmp_path / "run")


def test_shape_that_disagrees_with_config(tmp_path, decoder):
    write_saelens(tmp_path / "run", decoder)
    cfg = json.loads((tmp_path / "run" / "cfg.json").read_text())
    cfg["d_in"] = 20
    (tmp_path / "run" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="neither axis equals d_in=20"):
        load_run(tmp_path / "run")


def test_d_sae_mismatch_with_config(tmp_path, decoder):
    write_saelens(tmp_path / "run", decoder)
    cfg = json.loads((tmp_path / "run" / "cfg.json").read_text())
    cfg["d_sae"] = 50
    (tmp_path / "run" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="d_sae=50"):
        load_run(tmp_path / "run")


def test_unknown_format_lists_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LoadError, match="unknown format.*notes.txt"):
        load_run(tmp_path)


def test_zero_rows_are_counted(tmp_path, decoder):
    dead = decoder.clone()
    dead[[1, 5]] = 0
    write_saelens(tmp_path / "run", dead)
    run = load_run(tmp_path / "run")
    assert run.n_dead == 2 and "2 zero-norm" in run.warnings()[0]


def test_jumprelu_l0_coefficient_is_the_sparsity_setting(tmp_path, decoder):
    write_saelens(tmp_path / "a", decoder, architecture="jumprelu", k=None)
    write_saelens(tmp_path / "b", decoder, architecture="jumprelu", k=None)
    for folder, coef in (("a", 0.1), ("b", 0.3)):
        (tmp_path / folder / "runner_cfg.json").write_text(json.dumps({"seed": 0, "l0_coefficient": coef}))
    a, b = load_run(tmp_path / "a").meta, load_run(tmp_path / "b").meta
    assert (a.sparsity, b.sparsity) == ("l0coef=0.1", "l0coef=0.3")
    assert a.family_key() != b.family_key()



@pytest.mark.parametrize("fmt", ["saelens", "sparsify", "dictionary_learning", "dictionary_learning_linear", "gemmascope"])
def test_matching_loads_skip_the_encoder_and_keep_the_fingerprint(tmp_path, decoder, fmt):
    if fmt == "saelens":
        path = write_saelens(tmp_path / "run", decoder)
    elif fmt == "sparsify":
        path = write_sparsify(tmp_path / "run", "layers.3", {0: decoder})[0]
    elif fmt == "gemmascope":
        path = write_gemmascope(tmp_path / "run", decoder)
    else:
        path = write_dictionary_learning(tmp_path / "run", decoder,
                                         dict_class="AutoEncoder" if fmt.endswith("linear") else "AutoEncoderTopK")
    full, lean = load_run(path), load_run(path, with_encoder=False)
    assert full.encoder is not None and full.encoder.shape == (D_SAE, D_IN) and lean.encoder is None
    assert torch.equal(full.decoder, lean.decoder) and full.fingerprint == lean.fingerprint


def test_each_format_records_where_its_d_in_came_from(tmp_path, decoder):
    write_saelens(tmp_path / "sl", decoder)
    write_sparsify(tmp_path / "sp", "layers.3", {0: decoder})
    write_dictionary_learning(tmp_path / "dl", decoder)
    write_gemmascope(tmp_path / "gs1", decoder)
    write_gemmascope(tmp_path / "gs2", decoder, v2=True)
    sources = {name: load_meta(path).d_in_source for name, path in [
        ("sl", tmp_path / "sl"), ("sp", tmp_path / "sp" / "layers.3" / "seed0"), ("dl", tmp_path / "dl"),
        ("gs1", tmp_path / "gs1"), ("gs2", tmp_path / "gs2")]}
    assert sources == {"sl": "cfg.json 'd_in'", "sp": "cfg.json 'd_in'", "dl": "config.json 'trainer.activation_dim'",
                       "gs1": "W_enc shape in params.npz", "gs2": "W_enc shape in params.safetensors"}


def test_gemma_scope_config_is_named_when_it_states_d_in(tmp_path, decoder):
    folder = write_gemmascope(tmp_path / "gs", decoder)
    (folder / "config.json").write_text(json.dumps({"d_model": D_IN}))
    meta = load_meta(folder)
    assert meta.d_in == D_IN and meta.d_in_source == "config.json 'd_model'"


def test_plain_array_d_in_source_follows_who_stated_it(tmp_path, decoder):
    np.save(tmp_path / "side.npy", decoder.numpy())
    (tmp_path / "side.npy.json").write_text(json.dumps({"d_in": D_IN}))
    save_file({"W_dec": decoder.contiguous()}, str(tmp_path / "head.safetensors"), metadata={"d_in": str(D_IN)})
    np.save(tmp_path / "bare.npy", decoder.numpy())
    assert load_meta(tmp_path / "side.npy").d_in_source == "sidecar side.npy.json"
    assert load_meta(tmp_path / "head.safetensors").d_in_source == "head.safetensors header metadata"
    assert load_meta(tmp_path / "bare.npy", d_in=D_IN).d_in_source == arrays.GIVEN_D_IN
    assert load_run(tmp_path / "bare.npy", d_in=D_IN, d_in_source="--d-in").meta.d_in_source == "--d-in"
    # A given d_in wins over a stated one, and says so.
    assert load_meta(tmp_path / "side.npy", d_in=D_IN, d_in_source="--d-in").d_in_source == "--d-in"


def test_asked_d_in_that_disagrees_names_both_sources(tmp_path, decoder):
    write_saelens(tmp_path / "sl", decoder)
    with pytest.raises(LoadError, match=rf"d_in is {D_IN} \(from cfg.json 'd_in'\), but 20 was asked for \(--d-in\)"):
        load_run(tmp_path / "sl", d_in=20, d_in_source="--d-in")


def test_format_hints_cover_every_format_and_name_the_files_detection_needs():
    hints = dict(format_hints())
    assert list(hints) == [m.LABEL for m in FORMATS.values()]
    assert set(hints) == {"SAELens", "sparsify", "dictionary_learning", "Gemma Scope", "plain arrays"}
    required = {saelens.LABEL: [saelens.WEIGHTS, saelens.CONFIG], sparsify.LABEL: [sparsify.WEIGHTS, sparsify.CONFIG],
                dictionary_learning.LABEL: [dictionary_learning.WEIGHTS, dictionary_learning.CONFIG],
                gemmascope.LABEL: list(gemmascope.FILES), arrays.LABEL: list(arrays.SUFFIXES)}
    for label, names in required.items():
        assert all(n in hints[label] for n in names), (label, hints[label])


def test_files_named_by_each_hint_are_detected_as_that_format(tmp_path, decoder):
    write_saelens(tmp_path / "sl", decoder)
    write_dictionary_learning(tmp_path / "dl", decoder)
    write_gemmascope(tmp_path / "gs", decoder)
    found = {detect(tmp_path / "sl"), detect(tmp_path / "dl"), detect(tmp_path / "gs"),
             detect(write_sparsify(tmp_path / "sp", "h", {0: decoder})[0])}
    labels = {FORMATS[name].LABEL for name in found}
    assert labels == set(dict(format_hints())) - {arrays.LABEL}


def test_no_runs_message_names_the_folder_and_every_hint(tmp_path):
    text = no_runs_message(tmp_path)
    assert text.splitlines()[0] == f"No SAE runs found in {tmp_path}. The loaders look for:"
    for label, hint in format_hints():
        assert f"  {label}: {hint}" in text.splitlines()
