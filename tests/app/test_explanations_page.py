"""Explanations page: uploads are named by their own name; an unreachable endpoint says what to do; keys stay hidden."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from app_helpers import assert_clean, open_app

PAGE = "pages/explanations.py"


def test_import_csv_reports_kept_and_out_of_range(generated_ws):
    csv = generated_ws / "imports" / "labels.csv"
    csv.parent.mkdir(exist_ok=True)
    csv.write_text("feature,explanation\n1,numbers\n2,colours\n500,too far\n")
    at = open_app({"ws": str(generated_ws)}, PAGE)
    assert_clean(at)
    at.selectbox(key="import_target").set_value("relu_l1/seed2")
    at.text_input(key="import_path").set_value(str(csv))
    at.run()
    next(b for b in at.button if b.label == "Check without storing").click().run()
    assert_clean(at)
    # Any success box: a local explainer answering on the default endpoint adds its own "Reachable" one.
    assert any("Would store 2 explanations for relu_l1/seed2 from 3 records" in s.value for s in at.success)
    summary = next(df.value for df in at.dataframe if "what" in df.value)
    assert summary.set_index("what")["count"].filter(like="outside").iloc[0] == 1


def test_import_path_outside_roots_is_refused(generated_ws):
    at = open_app({"ws": str(generated_ws)}, PAGE)
    at.text_input(key="import_path").set_value("/etc/passwd")
    at.run()
    next(b for b in at.button if b.label == "Check without storing").click().run()
    assert any("outside the allowed workspace roots" in e.value for e in at.error)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shown(at) -> list[str]:
    """Every message, caption and markdown text on the page."""
    return [str(e.value) for kind in ("markdown", "caption", "info", "success", "warning", "error")
            for e in getattr(at, kind)]


def _models_server(port: int) -> ThreadingHTTPServer:
    """A real server on `port` that answers GET /v1/models with one model."""
    body = json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_unreachable_endpoint_disables_generate_and_says_how_to_start_one(generated_ws):
    at = open_app({"ws": str(generated_ws)}, PAGE)
    assert_clean(at)
    at.text_input(key="explain_endpoint").set_value(f"http://127.0.0.1:{_free_port()}/v1")
    at.text_input(key="explain_api_key").set_value("sk-secret-value")
    at.number_input(key="explain_n").set_value(2)
    at.run()
    assert_clean(at)
    assert any(w.value.startswith("Not reachable: connection refused") for w in at.warning)
    assert at.button(key="explain_start").disabled
    shown = _shown(at)
    assert "Generate is off: the endpoint is not reachable." in shown
    assert any("Estimate:" in t for t in shown)  # the estimate needs no server
    help_text = " ".join(shown)
    assert "make explainer" in help_text and ".venv/bin/python -m saecore explainer serve --port 8012" in help_text
    assert "OpenAI-compatible endpoint" in help_text and "OPENAI_API_KEY" in help_text
    assert all("sk-secret" not in t for t in shown)
    assert all("sk-secret" not in str(v) for v in at.query_params.values())


def test_check_again_asks_the_endpoint_anew(generated_ws):
    port = _free_port()
    at = open_app({"ws": str(generated_ws)}, PAGE)
    at.text_input(key="explain_endpoint").set_value(f"http://127.0.0.1:{port}/v1").run()
    assert at.button(key="explain_start").disabled
    httpd = _models_server(port)
    try:
        at.run()  # the last answer is reused for a few seconds
        assert at.button(key="explain_start").disabled
        at.button(key="explain_recheck").click().run()
        assert_clean(at)
        assert any(s.value.startswith("Reachable: lists 1 model (test-model)") for s in at.success)
        assert not at.button(key="explain_start").disabled
        assert "Generate is off" not in " ".join(_shown(at))
    finally:
        httpd.shutdown()
        httpd.server_close()


def _generation_form(tmp_path, monkeypatch, srv, features: str, **keys: str):
    """The Generate tab on a one-run workspace, pointed at `srv` for `features`; `keys` fill more keyed fields."""
    from app_helpers import feature_data
    from saecore.features import write_feature_data
    from workspaces import related_decoders, write_saelens

    run = write_saelens(tmp_path / "gen" / "seed0", related_decoders(1, 64, 8)[0], seed=0)
    write_feature_data(run, feature_data(64, 0))
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    monkeypatch.setenv("SAECORE_CACHE_DIR", str(tmp_path / "cache"))
    at = open_app({"ws": str(tmp_path / "gen")}, PAGE)
    at.radio(key="explain_how").set_value("list").run()
    at.text_input(key="explain_list").set_value(features)
    at.text_input(key="explain_endpoint").set_value(srv.base_url)
    next(t for t in at.text_input if t.label == "Model").set_value("test-model")
    for key, value in keys.items():
        at.text_input(key=key).set_value(value)
    at.run()
    return at, run


def test_key_from_a_named_environment_variable_is_used_and_never_shown(tmp_path, monkeypatch):
    from openai_server import FakeOpenAI

    monkeypatch.setenv("MY_LLM_KEY", "sk-env-only")
    with FakeOpenAI(api_key="sk-env-only", models=("test-model",)) as srv:
        at, _ = _generation_form(tmp_path, monkeypatch, srv, "0", explain_key_env="MY_LLM_KEY")
        assert "`MY_LLM_KEY` is set (value hidden) in the dashboard's environment." in _shown(at)
        at.button(key="explain_start").click().run(timeout=120)
    assert_clean(at)
    assert at.success and any(s.value.startswith("1 feature explained") for s in at.success)
    assert all("sk-env-only" not in t for t in _shown(at))


def test_an_uploaded_file_is_named_by_its_own_name_never_a_temporary_path(generated_ws):
    tmp_root = tempfile.gettempdir()
    at = open_app({"ws": str(generated_ws)}, PAGE)
    at.selectbox(key="import_target").set_value("relu_l1/seed2")
    at.file_uploader[0].set_value(("my labels.csv", b"feature,explanation\n1,numbers\n500,too far\n", "text/csv"))
    at.run()
    at.button(key="import_check").click().run()
    assert_clean(at)
    assert any("Would store 1 explanation for relu_l1/seed2 from 2 records in my labels.csv" in s.value
               for s in at.success)
    kept = next(df.value for df in at.dataframe if "source" in df.value)
    assert set(kept["source"]) == {"my labels.csv"}
    assert all(tmp_root not in t for t in _shown(at))

    at.file_uploader[0].set_value(("my labels.csv", b"index;text\n1;numbers\n", "text/csv"))
    at.run()
    at.button(key="import_check").click().run()
    errors = [e.value for e in at.error if e.value.startswith("Import failed")]
    assert errors and errors[0].startswith("Import failed: my labels.csv: expected columns")
    assert all(tmp_root not in t for t in _shown(at))


def test_importer_names_the_display_name_in_errors_from_every_reader(tmp_path):
    from saecore.errors import LoadError
    from saecore.explanations import import_explanations

    bad = tmp_path / "batch-0.jsonl"
    bad.write_text('{"index": 1, "description": "x"}\n{not json\n')
    with pytest.raises(LoadError) as err:
        import_explanations(bad, None, store=False, display_name="export.jsonl")
    assert str(err.value).startswith("export.jsonl:2: not a JSON line") and str(tmp_path) not in str(err.value)
    bad.write_text('{"index": 1, "description": "x"}\n')
    report = import_explanations(bad, None, store=False, display_name="export.jsonl")
    assert report.source == "export.jsonl" and list(report.kept["source"]) == ["export.jsonl"]
    assert str(tmp_path) not in json.dumps(report.to_json())


def test_generation_against_a_local_endpoint_stores_explanations(tmp_path, monkeypatch):
    from openai_server import FakeOpenAI
    from saecore.explanations import read_explanations

    with FakeOpenAI(api_key="sk-test", models=("test-model",)) as srv:
        at, run = _generation_form(tmp_path, monkeypatch, srv, "0 1 2", explain_api_key="sk-test")
        next(b for b in at.button if b.label == "Generate explanations").click().run(timeout=120)
    assert_clean(at)
    assert any(s.value.startswith("3 features explained (0 from the cache), 0 failed") for s in at.success)
    stored = read_explanations(run)
    assert sorted(stored["feature"]) == [0, 1, 2] and set(stored["explainer"]) == {"test-model"}
    assert all("sk-test" not in str(v) for v in at.query_params.values())