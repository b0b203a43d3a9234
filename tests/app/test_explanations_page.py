"""Explanations page: imports report what matched; an unreachable endpoint gives a clear error; the key stays out of the URL."""

from __future__ import annotations

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
    assert at.success and "Would store 2 explanations for relu_l1/seed2 from 3 records" in at.success[0].value
    summary = next(df.value for df in at.dataframe if "what" in df.value)
    assert summary.set_index("what")["count"].filter(like="outside").iloc[0] == 1


def test_import_path_outside_roots_is_refused(generated_ws):
    at = open_app({"ws": str(generated_ws)}, PAGE)
    at.text_input(key="import_path").set_value("/etc/passwd")
    at.run()
    next(b for b in at.button if b.label == "Check without storing").click().run()
    assert any("outside the allowed workspace roots" in e.value for e in at.error)


def test_unreachable_endpoint_shows_an_error_and_no_key_in_url(generated_ws):
    at = open_app({"ws": str(generated_ws)}, PAGE)
    assert_clean(at)
    assert at.info and "Estimate" in next(i.value for i in at.info if "Estimate" in i.value)
    at.text_input(key="explain_endpoint").set_value("http://127.0.0.1:9/v1")
    at.text_input(key="explain_api_key").set_value("sk-secret-value")
    at.number_input(key="explain_n").set_value(2)
    at.number_input(key="explain_retries").set_value(0)
    at.run()
    next(b for b in at.button if b.label == "Generate explanations").click().run(timeout=120)
    assert_clean(at)
    assert at.error and "stopped" in at.error[0].value
    assert "sk-secret-value" not in at.error[0].value
    assert all("sk-secret" not in str(v) for v in at.query_params.values())


def test_generation_against_a_local_endpoint_stores_explanations(tmp_path, monkeypatch):
    from app_helpers import feature_data
    from openai_server import FakeOpenAI
    from saecore.explanations import read_explanations
    from saecore.features import write_feature_data
    from workspaces import related_decoders, write_saelens

    run = write_saelens(tmp_path / "gen" / "seed0", related_decoders(1, 64, 8)[0], seed=0)
    write_feature_data(run, feature_data(64, 0))
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    monkeypatch.setenv("SAECORE_CACHE_DIR", str(tmp_path / "cache"))
    with FakeOpenAI(api_key="sk-test", models=("test-model",)) as srv:
        at = open_app({"ws": str(tmp_path / "gen")}, PAGE)
        at.radio(key="explain_how").set_value("list").run()
        at.text_input(key="explain_list").set_value("0 1 2")
        at.text_input(key="explain_endpoint").set_value(srv.base_url)
        next(t for t in at.text_input if t.label == "Model").set_value("test-model")
        at.text_input(key="explain_api_key").set_value("sk-test")
        at.run()
        next(b for b in at.button if b.label == "Generate explanations").click().run(timeout=120)
    assert_clean(at)
    assert at.success and at.success[0].value.startswith("3 features explained")
    stored = read_explanations(run)
    assert sorted(stored["feature"]) == [0, 1, 2] and set(stored["explainer"]) == {"test-model"}
    assert all("sk-test" not in str(v) for v in at.query_params.values())
