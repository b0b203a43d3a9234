"""Explanation scores: metrics by hand, example sampling on a real store, an LLM judge over real HTTP, delphi files,
and the embedding score with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import math
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from openai_server import FakeOpenAI
from test_features import make_store
from workspaces import write_saelens

from saecore.cache import atomic_write_parquet
from saecore.cli import main
from saecore.errors import InputError, LoadError
from saecore.explain import AnswerCache, ExplainerConfig, ExplainerError, build_client
from saecore.explanations import store_explanations
from saecore.features import CONTEXTS_FILE, Context, compute_run_features, feature_file, read_contexts
from saecore.prompts import parse_binary_list
from saecore.delphi import import_delphi_scores
from saecore.examples import (Example, ExampleSet, SamplingConfig, build_examples, fuzzing_texts, run_store_codes,
                              span_count)
from saecore.explain import even_quota
from saecore.scoring import (SCORE_COLUMNS, ScoringError, auroc, balanced_accuracy, embedding_scores, read_scores,
                             score_answers, score_run, scores_table)
from saecore.train import load_sae

KEY = "sk-score-SECRET-42"
WORDS = ["cat", "dog", "owl", "bee"]


# ---------------------------------------------------------------- metrics by hand

def test_balanced_accuracy_by_hand():
    # 3 positives (2 found), 2 negatives (1 rejected): (2/3 + 1/2) / 2
    assert balanced_accuracy([1, 1, 1, 0, 0], [1, 1, 0, 0, 1]) == pytest.approx(7 / 12)
    assert balanced_accuracy([1, 0, 0, 0], [1, 1, 1, 1]) == pytest.approx(0.5)  # a constant judge is chance
    assert balanced_accuracy([1, 0, 0, 0], [1, 0, 0, 0]) == 1.0
    assert math.isnan(balanced_accuracy([1, 1], [1, 0]))


def test_auroc_by_hand_with_ties():
    # positives 0.9, 0.4, 0.6 vs negatives 0.5, 0.1: 5 of 6 pairs ordered right
    assert auroc([1, 1, 1, 0, 0], [0.9, 0.4, 0.6, 0.5, 0.1]) == pytest.approx(5 / 6)
    # a tie counts one half: (0.5 + 1) / 2
    assert auroc([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.1, 0.9]) == 0.0
    assert math.isnan(auroc([0, 0], [0.1, 0.2]))
    rng = np.random.default_rng(0)
    t, s = rng.integers(0, 2, 200), rng.integers(0, 5, 200)  # many ties
    pairs = [(a > b) + 0.5 * (a == b) for a in s[t == 1] for b in s[t == 0]]
    assert auroc(t, s) == pytest.approx(np.mean(pairs))


def test_unanswered_examples_are_excluded_and_too_few_give_nan():
    truth = [1, 1, 0, 0]
    assert score_answers(truth, [1, None, 0, 1]) == (pytest.approx(0.75), 1)  # TPR 1, TNR 1/2
    score, failed = score_answers(truth, [1, None, None, None])
    assert math.isnan(score) and failed == 3


def test_binary_list_parser():
    assert parse_binary_list("[1, 0, 1]", 3) == (1, 0, 1)
    assert parse_binary_list("Sure! [1,0,0,1]\nbecause...", 4) == (1, 0, 0, 1)
    assert parse_binary_list("1 0 1", 3) == (1, 0, 1)
    assert parse_binary_list("Excerpt 1: yes\nExcerpt 2: no", 2) == (1, 0)
    assert parse_binary_list("[1, 0]", 3) is None
    assert parse_binary_list("about cat", 3) is None
    assert parse_binary_list(None, 1) is None


def test_even_quota_spreads_over_bins():
    assert even_quota([20, 2, 2, 2], 8) == [2, 2, 2, 2]
    assert even_quota([20, 1, 0, 2], 8) == [5, 1, 0, 2]
    assert even_quota([1, 1], 5) == [1, 1]


# ---------------------------------------------------------------- examples from a real store

@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
    """A SAELens run (16 latents, TopK k=3) with contexts computed over a small real store."""
    root = tmp_path_factory.mktemp("store_run")
    (root / "acts").mkdir()
    store = make_store(root / "acts")
    decoder = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    run = write_saelens(root / "run", decoder, k=3)
    compute_run_features(run, store, 0, store.n_tokens, n_top=20, before=6, after=2)
    return run, store


def test_activating_examples_are_spread_over_quantile_bins(store_run):
    run, store = store_run
    contexts = read_contexts(run)
    feature = Counter(c.feature for c in contexts).most_common(1)[0][0]
    mine = [c for c in contexts if c.feature == feature]
    s = build_examples(feature, mine, SamplingConfig(n_activating=8, n_non_activating=0, skip_shown=False))
    assert Counter(e.bin for e in s.activating) == {"top": 2, "0.50-0.75": 2, "0.25-0.50": 2, "0.00-0.25": 2}
    assert all(e.activating and max(e.activations) > 0 for e in s.activating)
    weakest_top = min(max(e.activations) for e in s.activating if e.bin == "top")
    assert all(max(e.activations) <= weakest_top + 1e-6 for e in s.activating if e.bin == "0.00-0.25")
    again = build_examples(feature, mine, SamplingConfig(n_activating=8, n_non_activating=0, skip_shown=False))
    assert again == s  # deterministic in the seed
    # The contexts an explain prompt shows (8 strongest, 2 quantile samples) are left out when enough remain.
    held = build_examples(feature, mine, SamplingConfig(n_activating=8, n_non_activating=0))
    shown_tokens = {tuple(c.tokens) for c in mine if c.kind == "top" and c.rank < 8}
    assert not shown_tokens & {e.tokens for e in held.activating if e.bin == "top"}


def test_non_activating_windows_are_zero_on_every_token(store_run):
    run, store = store_run
    codes = run_store_codes(run, store)
    assert run_store_codes(run, store) is codes  # encoded once per run
    sae = load_sae(run)
    with torch.no_grad():
        f = sae.encode(torch.from_numpy(store.rows(0, store.n_tokens).astype(np.float32)))[0].numpy()
    for feature in range(16):
        assert np.array_equal(codes.firing_rows(feature), np.nonzero(f[:, feature] > 0)[0])
    contexts = read_contexts(run)
    checked = 0
    for feature in sorted({c.feature for c in contexts}):
        s = build_examples(feature, [c for c in contexts if c.feature == feature],
                           SamplingConfig(n_activating=6, n_non_activating=6), codes, store)
        assert s.negatives == "store"
        for e in s.non_activating:
            rows = slice(e.row, e.row + len(e.tokens))
            assert not e.activating and f[rows, feature].max() == 0, (feature, e.row)
            assert len(set(store.docs[rows])) == 1
            assert [int(t[1:]) for t in e.tokens] == store.tokens[rows].tolist()
            checked += 1
        assert {len(e.tokens) for e in s.non_activating} <= {len(e.tokens) for e in s.activating}
    assert checked > 20


def test_fuzzing_marks_true_tokens_and_as_many_random_ones():
    pos = Example(("The", "·cat", "·sat", "·on", "·the", "·cat"), (0, 2.0, 0, 0, 0, 1.0), True, "top")
    neg = Example(("A", "·dog", "·ran", "·far", "·away", "·now"), (0.0,) * 6, False, "random")
    texts = fuzzing_texts(ExampleSet(0, (pos,), (neg,), "store"), np.random.default_rng(0))
    assert texts[0] == "The <<cat>> sat on the <<cat>>"
    assert span_count(pos.activations) == 2 and texts[1].count("<<") == 2


# ---------------------------------------------------------------- LLM judge over real HTTP

def ctx(feature: int, word: str, kind: str, rank: int, act: float, bin_: str = "") -> Context:
    return Context(feature, ["The", f"·{word}", "·sat", f"·{rank}{kind[0]}"], [0.0, act, 0.0, 0.0], kind, rank,
                   {"quantile_bin": bin_})


def write_run(run: Path, explanations: dict[int, str] | None = None) -> Path:
    """A run folder with contexts (12 top + 2 per quantile bin per feature) and explanations naming each word."""
    rows = []
    for f, w in enumerate(WORDS):
        cs = [ctx(f, w, "top", r, 3.0 - 0.1 * r) for r in range(12)]
        cs += [ctx(f, w, "quantile", r, 0.5, b) for b in ("0.50-0.75", "0.25-0.50", "0.00-0.25") for r in range(2)]
        rows += [(c.feature, c.kind, c.rank, c.tokens, np.asarray(c.activations, np.float32), 0, 0, 1,
                  c.max_activation, c.extra["quantile_bin"]) for c in cs]
    run.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame.from_records(rows, columns=["feature", "kind", "rank", "tokens", "activations", "row", "doc",
                                                  "position", "activation", "quantile_bin"])
    atomic_write_parquet(feature_file(run, CONTEXTS_FILE), df)
    texts = explanations or {f: w for f, w in enumerate(WORDS)}
    store_explanations(run, pd.DataFrame({"feature": list(texts), "explanation": list(texts.values()),
                                          "explainer": "tester", "source": "test"}))
    return run


def config(url: str, **kw) -> ExplainerConfig:
    return ExplainerConfig(**{**dict(base_url=url, model="test-model", concurrency=1, timeout=5.0, max_retries=3,
                                     backoff=0.01), **kw})


SAMPLING = SamplingConfig(n_activating=6, n_non_activating=6)


@pytest.fixture
def server():
    with FakeOpenAI(api_key=KEY) as srv:
        yield srv


def score(run, srv, tmp_path, **kw):
    cfg = config(srv.base_url)
    return score_run(run, ["detection", "fuzzing"], client=build_client(cfg, api_key=KEY), config=cfg,
                     sampling=SAMPLING, cache=AnswerCache(tmp_path / "answers"), **kw)


def test_perfect_judge_scores_one_constant_judge_half_and_cache_reuses(tmp_path, server):
    run = write_run(tmp_path / "run")
    server.judge = "keyword"
    report = score(run, server, tmp_path)
    stored = read_scores(run)
    assert list(stored.columns) == list(SCORE_COLUMNS)
    assert len(stored) == 8 and set(stored["method"]) == {"detection", "fuzzing"}
    assert (stored["score"] == 1.0).all() and (stored["n_examples"] == 12).all() and (stored["n_failed"] == 0).all()
    assert set(stored["source"]) == {"llm:test-model"} and set(stored["negatives"]) == {"other-features"}
    assert set(stored["explainer"]) == {"tester"}
    n_requests = len(server.chat_requests())
    assert n_requests == 4 * 2 * 3  # 4 features × 2 methods × 12 examples in batches of 5
    assert report.requests == n_requests and report.n_cached == 0
    # The same job again: every answer from the cache, no request.
    again = score(run, server, tmp_path)
    assert len(server.chat_requests()) == n_requests and again.n_cached == 8 and again.requests == 0
    # A judge that says yes to everything is at chance.
    server.judge = "constant"
    score(run, server, tmp_path / "other-cache")
    assert (read_scores(run)["score"] == 0.5).all() and len(read_scores(run)) == 8
    table = scores_table(run)
    assert list(table.columns) == ["feature", "explainer", "detection", "fuzzing", "embedding", "stale"]
    assert table["detection"].tolist() == [0.5] * 4 and table["embedding"].isna().all() and not table["stale"].any()
    write_run(run, {0: "cats", 1: "dog", 2: "owl", 3: "bee"})
    assert scores_table(run)["stale"].tolist() == [True, False, False, False]


def test_prompts_show_the_explanation_and_marked_or_plain_excerpts(tmp_path, server):
    run = write_run(tmp_path / "run")
    server.judge = "keyword"
    score(run, server, tmp_path, features=[0])
    prompts = [r["body"]["messages"][-1]["content"] for r in server.chat_requests()]
    detection = [p for p in prompts if "<<" not in p]
    fuzzing = [p for p in prompts if "<<" in p]
    assert len(detection) == len(fuzzing) == 3
    assert all(p.startswith("Explanation: cat\nExcerpts:\n1. ") for p in prompts)
    assert sum(p.count("The cat sat") for p in detection) == 6
    assert sum(p.count("The <<cat>> sat") for p in fuzzing) == 6
    body = server.chat_requests()[0]["body"]
    assert body["max_tokens"] >= 4 * 5 + 8 and not body.get("stop")  # room for the list, no stop at a newline


def test_constrained_requests_carry_a_schema_of_the_batch_length_and_a_shot_of_that_length(tmp_path, server):
    run = write_run(tmp_path / "run")
    server.judge = "keyword"
    score(run, server, tmp_path, features=[0], constrain=True)
    bodies = [r["body"] for r in server.chat_requests()]
    lengths = sorted(b["messages"][-1]["content"].count("\n") - 2 for b in bodies)
    schemas = sorted(b["response_format"]["schema"]["maxItems"] for b in bodies)
    assert lengths == schemas == [2, 2, 5, 5, 5, 5]  # 12 examples per method in batches of 5
    for b in bodies:
        fmt = b["response_format"]
        assert fmt["type"] == "json_object" and fmt["schema"]["minItems"] == fmt["schema"]["maxItems"]
        assert fmt["schema"]["items"] == {"type": "integer", "enum": [0, 1]}
        # The worked example shows as many excerpts as the question, with a list answer of that length.
        n = fmt["schema"]["maxItems"]
        assert b["messages"][1]["content"].count("\n") - 2 == n and b["messages"][2]["content"].count(",") == n - 1
    # Unconstrained answers are cached apart: the same job without a schema asks again, and sends none.
    before = len(bodies)
    score(run, server, tmp_path, features=[0])
    later = [r["body"] for r in server.chat_requests()][before:]
    assert len(later) == before and not any("response_format" in b for b in later)


def test_unparseable_answers_count_as_failed_examples(tmp_path, server):
    run = write_run(tmp_path / "run")
    report = score(run, server, tmp_path, features=[1])  # judge None: "about ..." is no list
    assert len(report.results) == 2
    for r in report.results:
        assert math.isnan(r.score) and r.n_failed == r.n_examples == 12
    assert read_scores(run)["score"].isna().all()


def test_rate_limit_is_retried(tmp_path, server):
    run = write_run(tmp_path / "run")
    server.judge = "keyword"
    server.script.extend(["429", "500"])
    report = score(run, server, tmp_path, features=[2])
    assert [r.score for r in report.results] == [1.0, 1.0]
    assert len(server.chat_requests()) == 6 + 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    run = write_run(tmp_path / "run")
    cfg = config(f"http://127.0.0.1:{_free_port()}/v1", max_retries=0, timeout=1)
    with pytest.raises(ExplainerError, match="cannot connect to .* is the server running"):
        score_run(run, ["detection"], client=build_client(cfg), config=cfg, sampling=SAMPLING,
                  cache=AnswerCache(tmp_path / "a"))
    assert not feature_file(run, "scores.parquet").exists()


def test_a_fatal_error_keeps_what_was_scored(tmp_path, server):
    run = write_run(tmp_path / "run")
    server.judge = "keyword"
    server.rules.append(("Explanation: owl", "401"))
    with pytest.raises(ScoringError, match=r"rejected the API key.*4 feature scores finished"):
        score(run, server, tmp_path, store_every=1)
    stored = read_scores(run)
    assert sorted(set(stored["feature"])) == [0, 1] and (stored["score"] == 1.0).all()
    server.rules.clear()
    before = len(server.chat_requests())
    score(run, server, tmp_path)  # resumes: features 0 and 1 come from the cache
    assert len(server.chat_requests()) - before == 2 * 2 * 3
    assert len(read_scores(run)) == 8


def test_cli_scores_and_never_prints_the_key(tmp_path, server, capsys, monkeypatch):
    run = write_run(tmp_path / "run")
    server.judge = "keyword"
    monkeypatch.setenv("SCORE_TEST_KEY", KEY)
    args = ["score", str(run), "--method", "detection", "--features", "0-1", "--base-url", server.base_url,
            "--model", "test-model", "--key-env", "SCORE_TEST_KEY", "--cache", str(tmp_path / "c"),
            "--n-activating", "6", "--n-non-activating", "6", "--json"]
    assert main(args) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["methods"]["detection"] == {"features": 2, "scored": 2, "nan": 0, "failed_examples": 0,
                                              "errors": {}, "mean": 1.0}
    assert KEY not in out.out + out.err
    assert main(["score", str(run), "--method", "detection", "--base-url", f"http://127.0.0.1:{_free_port()}/v1",
                 "--max-retries", "0", "--timeout", "1"]) == 2
    assert "error: cannot connect to" in capsys.readouterr().err


# ---------------------------------------------------------------- delphi

def delphi_records(truth, predictions, style="delphi"):
    if style == "delphi":
        return [{"str_tokens": ["a", "b"], "activations": [0, 1], "distance": 0, "activating": t, "prediction": p,
                 "probability": None, "correct": None if p is None else p == t} for t, p in zip(truth, predictions)]
    return [{"text": "a b", "ground_truth": t, "correct": p == t, "highlighted": True} for t, p in zip(truth, predictions)]


def write_delphi(root: Path, scorer: str, name: str, records) -> Path:
    path = root / "scores" / scorer / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(records if isinstance(records, str) else json.dumps(records))
    return path


def test_delphi_scores_import(tmp_path):
    run = write_saelens(tmp_path / "run", torch.randn(16, 8))
    res = tmp_path / "results"
    # detection: TPR 1/2, TNR 1 -> 0.75; one example without an answer is left out
    write_delphi(res, "detection", "layers.4_latent3.txt",
                 delphi_records([True, True, False, False, True], [True, False, False, False, None]))
    # fuzz, sae-auto-interp style (ground_truth + correct): TPR 1, TNR 0 -> 0.5
    write_delphi(res, "fuzz", "layers.4_latent3.txt", delphi_records([True, False], [True, True], "old"))
    write_delphi(res, "fuzz", "layers.4_latent7.txt", delphi_records([True, False, True, False], [1, 0, 1, 0]))
    write_delphi(res, "simulation", "layers.4_latent3.txt", "[]")
    (res / "explanations").mkdir()
    (res / "explanations" / "layers.4_latent3.txt").write_text(json.dumps("the letter b"))
    report = import_delphi_scores(res, run)
    got = {(r.feature, r.method): (r.score, r.n_examples, r.n_failed) for r in report.scores.itertuples()}
    assert got == {(3, "detection"): (0.75, 5, 1), (3, "fuzzing"): (0.5, 2, 0), (7, "fuzzing"): (1.0, 4, 0)}
    assert report.skipped == {"simulation": 1}
    stored = read_scores(run)
    assert len(stored) == 3 and set(stored["explainer"]) == {"delphi"}
    assert all(s.startswith("delphi:") for s in stored["source"])
    assert (stored.loc[stored["feature"] == 3, "explanation_hash"] != "").all()
    # Several modules need a choice; corrupt JSON and out-of-range latents name the file.
    write_delphi(res, "detection", "layers.6_latent1.txt", delphi_records([True, False], [True, False]))
    with pytest.raises(InputError, match="2 modules"):
        import_delphi_scores(res, run)
    assert len(import_delphi_scores(res, run, module="layers.6", store=False).scores) == 1
    bad = write_delphi(tmp_path / "bad", "detection", "m_latent2.txt", "[{\"activating\": true,")
    with pytest.raises(LoadError, match=f"{bad}: not valid JSON"):
        import_delphi_scores(tmp_path / "bad", run)
    far = write_delphi(tmp_path / "far", "fuzz", "m_latent16.txt", delphi_records([True, False], [True, False]))
    with pytest.raises(LoadError, match=f"{far}: latent 16 is outside the run's d_sae 16"):
        import_delphi_scores(tmp_path / "far", run)
    odd = write_delphi(tmp_path / "odd", "detection", "m_latent2.txt", json.dumps([{"prediction": True}]))
    with pytest.raises(LoadError, match=rf"{odd}\[0\]: no 'activating'"):
        import_delphi_scores(tmp_path / "odd", run)


def test_cli_imports_delphi_scores(tmp_path, capsys):
    run = write_saelens(tmp_path / "run", torch.randn(16, 8))
    write_delphi(tmp_path / "res", "detection", "l_latent0.txt", delphi_records([True, False], [True, True]))
    assert main(["score", str(run), "--import-delphi", str(tmp_path / "res"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["methods"] == {"detection": {"features": 1, "mean": 0.5}}
    assert read_scores(run)["score"].tolist() == [0.5]


# ---------------------------------------------------------------- embedding score (real MiniLM)

CATS = ["My cat sleeps on the sofa all day", "The kitten chased a ball of yarn", "She adopted two cats from the shelter",
        "Our cat purrs when you stroke her fur", "A kitten meowed at the door"]
OTHER = ["Interest rates rose again this quarter", "The train to Paris leaves at noon",
         "Add salt to the boiling pasta water", "The football match ended in a draw", "Heavy rain is expected tomorrow"]


def example_set(positive, negative) -> ExampleSet:
    ex = lambda text, act: Example(tuple(text.split(" ")), (1.0 if act else 0.0,) * len(text.split(" ")), act,  # noqa: E731
                                   "top" if act else "random")
    return ExampleSet(0, tuple(ex(t, True) for t in positive), tuple(ex(t, False) for t in negative), "store")


def test_embedding_score_with_minilm(tmp_path):
    from saecore.semantic import Embedder

    embedder = Embedder(cache_dir=tmp_path / "emb", device="cpu")
    sets = {0: example_set(CATS, OTHER), 1: example_set(OTHER, CATS)}
    good, wrong = embedding_scores(sets, {0: "cats and kittens", 1: "cats and kittens"}, embedder, "tester")
    assert good.score == 1.0 and good.method == "embedding" and good.n_examples == 10
    assert good.source == "embedding:all-MiniLM-L6-v2"
    assert wrong.score == 0.0  # the same explanation for the opposite split ranks every example the wrong way


def test_well_scored_keeps_current_explanations_at_or_above_the_threshold():
    import pandas as pd

    from saecore.scoring import well_scored

    expl = pd.DataFrame({"feature": [0, 1, 2, 3, 4], "explanation": list("abcde")})
    scores = pd.DataFrame({"feature": [0, 1, 2, 3], "detection": [0.9, 0.6, 0.59, float("nan")],
                           "embedding": [0.1, 0.9, 0.9, 0.9], "stale": [False, False, False, False]})
    assert well_scored(expl, scores, "detection", 0.6)["feature"].tolist() == [0, 1]
    assert well_scored(expl, scores, "embedding", 0.5)["feature"].tolist() == [1, 2, 3]
    scores.loc[1, "stale"] = True
    assert well_scored(expl, scores, "detection", 0.6)["feature"].tolist() == [0]
    assert well_scored(expl, None, "detection", 0.0).empty
    with pytest.raises(InputError):
        well_scored(expl, scores, "simulation", 0.5)


def test_score_summary_means_and_counts_per_method():
    import pandas as pd

    from saecore.scoring import score_summary

    table = pd.DataFrame({"feature": [0, 1, 2], "detection": [0.5, 1.0, float("nan")], "fuzzing": [0.25, 0.5, 0.75],
                          "embedding": [float("nan")] * 3, "stale": [False] * 3})
    assert score_summary(table) == {"detection": "0.750 (2)", "fuzzing": "0.500 (3)", "embedding": "–"}
    assert score_summary(None) == {"detection": "–", "fuzzing": "–", "embedding": "–"}
