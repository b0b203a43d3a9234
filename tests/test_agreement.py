"""Activation agreement of matched features, against a direct dense computation, and the encoder-side matching."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from saecore.agreement import (Agreement, activation_agreement, batch_moments, compare_encoders, encoder_decoder,
                               family_agreement, measure_agreement, merge_moments, pearson_from_moments)
from saecore.cli import main
from saecore.errors import InputError
from saecore.matching import match_decoders
from saecore.runs import Run, RunMeta
from saecore.sae import BatchedSAE, SAEConfig
from saecore.train import load_sae
from workspaces import related_decoders, write_saelens, write_store

D_IN, D_SAE, N = 8, 24, 1200
MODEL, HOOK = "tiny-model", "blocks.4.hook_resid_post"


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Three related ReLU runs (SAELens folders) and a store they can read."""
    root = tmp_path_factory.mktemp("agreement")
    decs = related_decoders(3, D_SAE, D_IN, noise=0.4, seed=3)
    paths = [write_saelens(root / f"seed{s}", d, architecture="standard", k=None, seed=s, model=MODEL, hook=HOOK)
             for s, d in enumerate(decs)]
    return paths, write_store(root / "acts")


def direct(path_a, path_b, store, match, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Jaccard per matched pair from dense float64 codes of all tokens at once."""
    x = torch.from_numpy(store.rows(start, stop).astype(np.float64))
    with torch.no_grad():
        fa = load_sae(path_a).double().encode(x)[0].numpy()[:, match.rows]
        fb = load_sae(path_b).double().encode(x)[0].numpy()[:, match.cols]
    pearson = np.array([np.corrcoef(fa[:, p], fb[:, p])[0, 1] if fa[:, p].std() > 0 and fb[:, p].std() > 0
                        else np.nan for p in range(fa.shape[1])])
    ia, ib = fa > 0, fb > 0
    union = (ia | ib).sum(0)
    jaccard = np.where(union > 0, (ia & ib).sum(0) / np.maximum(union, 1), np.nan)
    return pearson, jaccard


@pytest.mark.parametrize("batch_size,start,stop", [(N, 0, N), (97, 0, N), (256, 150, 1111), (5000, 3, 1000)])
def test_streamed_agreement_equals_a_dense_computation(family, batch_size, start, stop):
    paths, store = family
    result = activation_agreement(paths[0], paths[1], store, start=start, stop=stop, batch_size=batch_size,
                                  device="cpu")
    match = match_decoders(load_sae(paths[0]).decoder(0), load_sae(paths[1]).decoder(0), device="cpu")
    pearson, jaccard = direct(paths[0], paths[1], store, match, start, stop)
    assert result.n_tokens == stop - start and result.n_pairs == D_SAE
    assert np.array_equal(result.feature_a, match.rows) and np.array_equal(result.feature_b, match.cols)
    assert np.allclose(result.decoder_score, match.scores)
    assert np.isfinite(pearson).sum() > D_SAE // 2  # the comparison has something to compare
    np.testing.assert_allclose(result.pearson, pearson, atol=1e-5)
    np.testing.assert_allclose(result.jaccard, jaccard, atol=1e-12)
    x = store.rows(start, stop).astype(np.float32)
    with torch.no_grad():
        fires = (load_sae(paths[0]).encode(torch.from_numpy(x))[0] > 0).sum(0).numpy()
    assert np.array_equal(result.counts_a, fires) and np.array_equal(result.fires_a, fires[match.rows])


def test_moments_survive_a_mean_that_dwarfs_the_spread():
    g = np.random.default_rng(1)
    a = 1e6 + 1e-3 * g.standard_normal((1000, 3))
    b = a * np.array([1.0, -2.0, 0.0]) + 1e-3 * g.standard_normal((1000, 3))
    m = None
    for lo, hi in ((0, 7), (7, 400), (400, 401), (401, 1000)):
        m = merge_moments(m, batch_moments(torch.from_numpy(a[lo:hi]), torch.from_numpy(b[lo:hi])))
    expected = [np.corrcoef(a[:, p], b[:, p])[0, 1] for p in range(3)]
    np.testing.assert_allclose(pearson_from_moments(m), expected, atol=1e-6)


def twin_saes() -> tuple[BatchedSAE, BatchedSAE]:
    """Two identical ReLU SAEs except that feature 0 never fires in either and feature 1 never fires in the second."""
    torch.manual_seed(0)
    a = BatchedSAE(SAEConfig("standard", D_IN, 16), [0]).eval()
    with torch.no_grad():
        a.b_enc.normal_(0, 0.1)
        a.b_enc[0, 0] = -1e4
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.b_enc[0, 1] = -1e4
    return a, b


def test_identical_latents_agree_fully_and_silent_pairs_are_undefined(family):
    _, store = family
    a, b = twin_saes()
    match = match_decoders(a.decoder(0), b.decoder(0), device="cpu")
    assert np.array_equal(match.rows, match.cols)
    [res] = measure_agreement([a, b], [(0, 1, match)], store, batch_size=333, device="cpu")
    assert isinstance(res, Agreement)
    assert res.fires_a[0] == res.fires_b[0] == 0 and math.isnan(res.pearson[0]) and math.isnan(res.jaccard[0])
    assert res.fires_a[1] > 0 and res.fires_b[1] == 0 and math.isnan(res.pearson[1]) and res.jaccard[1] == 0
    live = slice(2, None)
    assert (res.fires_a[live] > 0).all()
    np.testing.assert_allclose(res.pearson[live], 1.0, atol=1e-12)
    assert (res.jaccard[live] == 1.0).all()
    s = res.summary()
    assert s["pearson_undefined"] == 2 and s["jaccard_undefined"] == 1
    assert s["pearson_mean"] == pytest.approx(1.0) and s["jaccard_mean"] == pytest.approx(14 / 15)
    assert json.loads(json.dumps(res.to_json(pairs=True)))["pairs"]["pearson"][0] is None


def test_family_agreement_covers_every_pair(family):
    paths, store = family
    fam = family_agreement(paths, store, batch_size=500, device="cpu")
    assert fam.index == [(0, 1), (0, 2), (1, 2)]
    single = activation_agreement(paths[1], paths[2], store, batch_size=500, device="cpu")
    np.testing.assert_allclose(fam.pairs[2].pearson, single.pearson, equal_nan=True)
    means = [p.summary()["pearson_mean"] for p in fam.pairs]
    assert fam.pearson_mean == pytest.approx(np.mean(means))
    assert len(fam.frame()) == 3 and json.loads(json.dumps(fam.to_json()))["jaccard_mean"] == pytest.approx(
        fam.jaccard_mean)


@pytest.mark.parametrize("what", ["hook", "model"])
def test_runs_of_other_activations_are_refused_naming_both_files(family, tmp_path, what):
    paths, store = family
    other = write_saelens(tmp_path / "other", related_decoders(1, D_SAE, D_IN)[0], architecture="standard", k=None,
                          **{what: "something-else"})
    with pytest.raises(InputError) as err:
        activation_agreement(paths[0], other, store, device="cpu")
    assert str(paths[0]) in str(err.value) and str(other) in str(err.value)


def test_store_of_another_hook_or_width_is_refused(family, tmp_path):
    paths, _ = family
    with pytest.raises(InputError, match="hook_name"):
        activation_agreement(paths[0], paths[1], write_store(tmp_path / "h", hook="blocks.9.hook_resid_post"))
    with pytest.raises(InputError, match="d_model=6"):
        activation_agreement(paths[0], paths[1], write_store(tmp_path / "d", d=6))


def unit(*parts: tuple[int, float]) -> torch.Tensor:
    v = torch.zeros(8)
    for i, x in parts:
        v[i] = x
    return v


def hand_made(swap_encoders: bool) -> tuple[Run, Run]:
    """A with unit rows e0..e3; B's partner of A's feature i sits at row PARTNER[i], built so each cosine is known."""
    partner = [2, 0, 3, 1]
    dec_b = [unit((0, 1)), unit((1, 1)), unit((2, 0.6), (6, 0.8)), unit((3, 1))]
    enc_b = [unit((0, 1)), unit((1, 0.5), (7, 0.75 ** 0.5)), unit((2, 1)), unit((3, 1))]
    if swap_encoders:
        enc_b[0], enc_b[3] = enc_b[3], enc_b[0]
    b_dec, b_enc = torch.zeros(4, 8), torch.zeros(4, 8)
    for i, p in enumerate(partner):
        b_dec[p], b_enc[p] = dec_b[i], enc_b[i]
    eye = torch.eye(8)[:4]
    a = Run(RunMeta("A", "/runs/A", "arrays", 8, 4), eye.clone(), eye.clone())
    return a, Run(RunMeta("B", "/runs/B", "arrays", 8, 4), b_dec, b_enc)


@pytest.mark.parametrize("swap", [False, True])
def test_shared_in_both_on_hand_made_dictionaries(swap):
    a, b = hand_made(swap)
    r = encoder_decoder(a, b, threshold=0.7, device="cpu")
    assert r.decoder_partner.tolist() == [2, 0, 3, 1]
    np.testing.assert_allclose(r.decoder_cosine, [1, 1, 0.6, 1])
    assert r.decoder_pw_mcc == pytest.approx(0.9)
    assert r.shared_decoder == pytest.approx(0.75)
    assert r.shared_encoder == pytest.approx(0.75)
    if swap:
        np.testing.assert_allclose(r.encoder_cosine, [0, 0.5, 1, 0], atol=1e-7)
        assert r.encoder_partner.tolist() == [1, 0, 3, 2]
        assert r.shared_both == 0 and r.same_partner == pytest.approx(0.5)
    else:
        np.testing.assert_allclose(r.encoder_cosine, [1, 0.5, 1, 1], atol=1e-7)
        assert r.shared_both == pytest.approx(0.5) and r.same_partner == 1
    assert r.encoder_pw_mcc == pytest.approx(0.875)
    assert encoder_decoder(a, b, threshold=0.55, device="cpu").shared_both == pytest.approx(0.25 if swap else 0.75)


def test_a_run_without_encoder_is_refused():
    a, b = hand_made(False)
    bare = Run(b.meta, b.decoder)
    with pytest.raises(InputError, match="/runs/B.*encoder"):
        encoder_decoder(a, bare, device="cpu")


def test_cli_agreement_json_and_table(family, tmp_path, capsys):
    paths, store = family
    csv = tmp_path / "pairs.csv"
    assert main(["agreement", str(paths[0]), str(paths[2]), "--acts", str(store.path), "--batch-size", "300",
                 "--stop", "1000", "--device", "cpu", "--json", "--out", str(csv)]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = activation_agreement(paths[0], paths[2], store, stop=1000, device="cpu").summary()
    assert out["n_tokens"] == 1000 and out["n_pairs"] == D_SAE
    assert out["pearson_mean"] == pytest.approx(ref["pearson_mean"], abs=1e-9)
    assert out["jaccard_mean"] == pytest.approx(ref["jaccard_mean"], abs=1e-12)
    import pandas as pd

    assert len(pd.read_csv(csv)) == D_SAE
    assert main(["agreement", str(paths[0]), str(paths[2]), "--acts", str(store.path), "--device", "cpu"]) == 0
    assert "mean Pearson" in capsys.readouterr().out


def test_cli_encoder_json_and_clean_errors(family, tmp_path, capsys):
    paths, store = family
    assert main(["encoder", str(paths[0]), str(paths[1]), "--threshold", "0.5", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = compare_encoders(paths[0], paths[1], threshold=0.5, device="cpu")
    assert out["threshold"] == 0.5 and out["n_features"] == D_SAE
    for key in ("decoder_pw_mcc", "encoder_pw_mcc", "shared_decoder", "shared_encoder", "shared_both", "same_partner"):
        assert out[key] == pytest.approx(getattr(ref, key))
    assert out["shared_both"] <= min(out["shared_decoder"], out["shared_encoder"])
    other = write_saelens(tmp_path / "other", related_decoders(1, D_SAE, D_IN)[0], architecture="standard", k=None,
                          hook="blocks.9.hook_resid_post")
    assert main(["agreement", str(paths[0]), str(other), "--acts", str(store.path), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(other) in err and "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_gives_the_cpu_numbers(family):
    paths, store = family
    cpu = activation_agreement(paths[0], paths[1], store, batch_size=256, device="cpu")
    gpu = activation_agreement(paths[0], paths[1], store, batch_size=256, device="cuda")
    np.testing.assert_allclose(gpu.pearson, cpu.pearson, atol=1e-6, equal_nan=True)
    assert np.array_equal(gpu.counts_a, cpu.counts_a) and np.array_equal(gpu.fires_both, cpu.fires_both)


def test_between_and_of_feature_see_a_pair_from_either_side():
    from saecore.agreement import Agreement, FamilyAgreement

    f = lambda *v: np.array(v)  # noqa: E731
    agr = Agreement("A", "B", f(0, 1, 2), f(5, 3, 4), f(0.9, 0.8, 0.7), f(0.5, 0.6, np.nan), f(0.1, 0.2, np.nan),
                    f(3, 4, 0), f(2, 5, 1), f(1, 2, 0), np.zeros(3), np.zeros(6), 100)
    fam = FamilyAgreement(["A", "B"], ["a", "b"], [(0, 1)], [agr])
    assert fam.between(0, 1) is agr
    back = fam.between(1, 0)
    assert back.run_a == "B" and back.feature_a.tolist() == [3, 4, 5] and back.feature_b.tolist() == [1, 2, 0]
    assert back.pearson[2] == 0.5 and back.fires_a.tolist() == [5, 1, 2] and back.fires_b.tolist() == [4, 0, 3]
    assert agr.of_feature(1) == {"feature_b": 3, "pearson": 0.6, "jaccard": 0.2, "fires_a": 4, "fires_b": 5,
                                 "fires_both": 2, "n_tokens": 100}
    assert back.of_feature(0) is None and back.of_feature(5)["feature_b"] == 0
    with pytest.raises(KeyError):
        fam.between(0, 2)


def test_agreement_frame_and_activation_r_column():
    import pandas as pd

    from saecore.agreement import Agreement, EncoderDecoder, FamilyAgreement, agreement_frame, with_activation_r

    f = lambda *v: np.array(v)  # noqa: E731
    agr = Agreement("A", "B", f(0, 1), f(1, 0), f(0.9, 0.8), f(0.5, np.nan), f(0.2, 0.0), f(3, 0), f(2, 5), f(1, 0),
                    np.zeros(2), np.zeros(2), 100)
    match = match_decoders(torch.eye(2, 4, dtype=torch.float32), torch.eye(2, 4, dtype=torch.float32))
    fake = EncoderDecoder.__new__(EncoderDecoder)
    for k, v in dict(encoder_pw_mcc=0.3, shared_decoder=0.5, shared_encoder=0.25, shared_both=0.25,
                     same_partner=1.0).items():
        object.__setattr__(fake, k, v)
    frame = agreement_frame(["A", "B", "C"], {(0, 1): match, (0, 2): match}, {(0, 1): fake, (0, 2): None},
                            FamilyAgreement(["A", "B"], ["a", "b"], [(0, 1)], [agr]))
    assert frame["pair"].tolist() == ["A ↔ B", "A ↔ C"] and frame["decoder_pw_mcc"].tolist() == [1.0, 1.0]
    assert frame.loc[0, "shared_both"] == 0.25 and np.isnan(frame.loc[1, "shared_both"])
    assert frame.loc[0, "pearson_mean"] == 0.5 and np.isnan(frame.loc[1, "pearson_mean"])
    pairs = pd.DataFrame({"feature_a": [1, 0, 7], "feature_b": [0, 1, 3], "score": [0.8, 0.9, 0.1], "x": [1, 2, 3]})
    out = with_activation_r(pairs, agr)
    assert list(out.columns) == ["feature_a", "feature_b", "score", "activation_r", "x"]
    assert out["activation_r"].iloc[1] == 0.5 and out["activation_r"].iloc[[0, 2]].isna().all()
