"""Explanations: generate them through an OpenAI-compatible endpoint, or import them from other tools' exports."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import data, page
from dashboard.state import open_workspace, publish, roots
from dashboard.tables import table
from saecore.access import AccessError, resolve_inside
from saecore.errors import SaecoreError
from saecore.explain_plan import parse_indices
from saecore.scoring import score_summary
from saecore.text import plural

SCORE_HEADS = {"detection": "detection", "fuzzing": "fuzzing", "embedding": "embedding AUROC"}
SCORE_HELP = "mean explanation score over the scored features (how many in brackets); 0.5 is chance"

view = page.start("📝 Explanations")
ws, root = open_workspace(view)
publish(view)
if ws is None:
    st.stop()
root_s = str(root)
explain = data.optional("explain", "explain_run")
importer = data.optional("explanations", "import_explanations")
names = [m.name for m in ws.runs]
if not names:
    st.info("No runs in this workspace.")
    st.stop()

counts = []
for m in ws.runs:
    stored, _ = data.explanations(m.path)
    ctx_ok = data.has_contexts(m.path)
    scores = score_summary(data.explanation_scores(m.path))
    counts.append({"run": m.name, "explained features": 0 if stored is None else int(stored["feature"].nunique()),
                   "explainers": "" if stored is None else ", ".join(sorted(stored["explainer"].unique())),
                   "has contexts": ctx_ok, **{SCORE_HEADS[k]: v for k, v in scores.items()}})
table(pd.DataFrame(counts), column_config={
    "explainers": st.column_config.TextColumn(width=160),
    "has contexts": st.column_config.CheckboxColumn("contexts", width=75, help="top-activating contexts stored"),
    **{h: st.column_config.TextColumn(h, width=130 if len(h) > 10 else 105, help=SCORE_HELP)
       for h in SCORE_HEADS.values()}})
st.caption("Explanation scores: mean over scored features (number scored); 0.5 is chance. Compute them with "
           "`python -m saecore score RUN --method detection fuzzing embedding`.")

gen_tab, import_tab = st.tabs(["Generate", "Import"])

with gen_tab:
    if explain is None:
        st.info("Generating explanations is not available in this build.")
    else:
        from saecore.explain import (API_KEY_ENV, DEFAULT_ENDPOINT, DEFAULT_MODEL, ExplainerConfig, build_client,
                                     endpoint_help, generate_blocker, key_fingerprint, model_note, resolve_api_key,
                                     sample_features)
        from saecore.explain_plan import estimate
        from saecore.explainer_server import start_help

        with_ctx = [c["run"] for c in counts if c["has contexts"]]
        if not with_ctx:
            st.info("No run has top-activating contexts yet; explanations are written from them "
                    "(build them with the features command or the demo).")
        else:
            run_name = st.selectbox("Run to explain", with_ctx)
            meta = ws.run(run_name)
            contexts = data.feature_contexts(meta.path) or {}
            available = sorted(contexts)
            how = st.radio("Which features", ["sample", "list"], horizontal=True, key="explain_how",
                           format_func=lambda h: "a seeded random sample" if h == "sample" else "a list of indices")
            if how == "sample":
                c1, c2 = st.columns(2)
                n = int(c1.number_input("How many features", min_value=1, max_value=max(1, len(available)),
                                        value=min(50, max(1, len(available))), key="explain_n"))
                seed = int(c2.number_input("Sample seed", min_value=0, value=0))
                features = sample_features(available, n, seed)
            else:
                text = st.text_input("Feature indices (comma or space separated)", key="explain_list")
                try:
                    features = parse_indices(text, meta.d_sae)
                except ValueError as exc:
                    st.error(str(exc))
                    features = []
            c3, c4 = st.columns(2)
            endpoint = c3.text_input("Endpoint (OpenAI-compatible base URL)", value=DEFAULT_ENDPOINT,
                                     key="explain_endpoint")
            status_slot = c3.empty()
            model = c4.text_input("Model", value=DEFAULT_MODEL)
            k1, k2 = st.columns(2)
            api_key = k1.text_input("API key (not needed for a local server; never saved to disk or put in the URL)",
                                    type="password", value="", key="explain_api_key")
            key_env = k2.text_input("API key environment variable (used when the key field is empty)",
                                    value=API_KEY_ENV, key="explain_key_env").strip()
            if not api_key.strip() and key_env:
                env_state = "set (value hidden)" if resolve_api_key(None, key_env) else "not set"
                k2.caption(f"`{key_env}` is {env_state} in the dashboard's environment.")
            key = resolve_api_key(api_key, key_env)
            status = data.endpoint_status(endpoint.strip(), key_fingerprint(key), key)
            (status_slot.success if status.reachable else status_slot.warning)(status.describe())
            note = model_note(status, model.strip())
            if note:
                st.warning(f"Check the model name: {note}.")
            st.button("Check again", key="explain_recheck", on_click=data.endpoint_status.clear,
                      help="ask the endpoint again now instead of reusing the answer of the last 10 s")
            if not status.reachable:
                with st.container(border=True):
                    st.markdown("**No explainer answers at this endpoint.** Either:")
                    st.markdown("**(a) Start the local explainer** " + start_help())
                    st.markdown("**(b) Use any OpenAI-compatible endpoint**: " + endpoint_help(key_env))
            with st.expander("Request settings and prices"):
                d1, d2, d3 = st.columns(3)
                max_tokens = int(d1.number_input("max tokens per answer", min_value=5, value=30))
                concurrency = int(d2.number_input("parallel requests", min_value=1, max_value=16, value=2))
                retries = int(d3.number_input("retries per request", min_value=0, max_value=8, value=2,
                                              key="explain_retries"))
                p1, p2 = st.columns(2)
                price_in = p1.number_input("$ per 1M prompt tokens", min_value=0.0, value=0.0)
                price_out = p2.number_input("$ per 1M completion tokens", min_value=0.0, value=0.0)
            config = ExplainerConfig(base_url=endpoint.strip(), model=model.strip(), max_tokens=max_tokens,
                                     concurrency=concurrency, max_retries=retries)
            stored, _ = data.explanations(meta.path)
            already = [] if stored is None else stored.loc[stored["explainer"] == config.model, "feature"].tolist()
            plan = estimate(contexts, features, max_tokens, concurrency, already, price_in, price_out,
                            config.n_top, config.n_quantile)
            st.info(f"Estimate: {plan.summary()}. Time assumes ~100 tokens/s decoding (a small local model); "
                    "answers are cached, so a stopped job resumes where it left off.")
            blocked = generate_blocker(features, status)
            if st.button("Generate explanations", type="primary", key="explain_start", disabled=blocked is not None,
                         help=f"off: {blocked}" if blocked else None):
                bar = st.progress(0.0, text="starting…")

                def progress(done: int, total: int, message: str) -> None:
                    bar.progress(done / max(total, 1), text=f"{done}/{total} · {message}")

                try:
                    client = build_client(config, key, key_env or API_KEY_ENV)
                    report = explain(meta.path, client, config, features, progress=progress)
                except (SaecoreError, OSError, ValueError) as exc:
                    st.error(f"Explanation job stopped: {exc}")
                else:
                    st.success(f"{plural(report.n_ok, 'feature')} explained ({report.n_cached:,} from the cache), "
                               f"{report.n_failed:,} failed, in {report.wall_seconds:.1f} s; "
                               f"{plural(report.prompt_tokens, 'prompt token')} and "
                               f"{plural(report.completion_tokens, 'completion token')}.")
                    if report.stored_to:
                        st.caption(f"Stored in {report.stored_to}")
                    failures = report.failures()
                    if failures:
                        table(pd.DataFrame({"feature": list(failures), "problem": list(failures.values())}))
            if blocked:
                st.caption(f"Generate is off: {blocked}.")

with import_tab:
    if importer is None:
        st.info("Importing explanations is not available in this build.")
    else:
        target = st.selectbox("Run the explanations belong to", names, key="import_target")
        upload = st.file_uploader("Explanation file (Neuronpedia .jsonl.gz / .json, SAEBench .json, CSV, JSON map)")
        source_text = st.text_input("…or a file or folder path inside the workspace roots (e.g. a delphi folder)",
                                    key="import_path")
        e1, e2, e3 = st.columns(3)
        explainer = e1.text_input("Only this explainer (optional)").strip() or None
        source_id = e2.text_input("Source / layer id (optional)").strip() or None
        label = e3.text_input("Explainer name to record (optional)").strip() or None
        b1, b2 = st.columns(2)
        preview = b1.button("Check without storing", key="import_check")
        store = b2.button("Import and store", type="primary", key="import_store")
        if preview or store:
            # An upload is read from a temporary copy; every message names the uploaded file instead.
            shown = Path(upload.name).name if upload is not None else None
            tmp = ""
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    if shown is not None:
                        source = Path(tmp) / shown
                        source.write_bytes(upload.getvalue())
                    elif source_text.strip():
                        source = resolve_inside(source_text, roots(), data.base_dir())
                    else:
                        raise AccessError("choose a file to upload or give a path")
                    report = importer(source, ws.run(target), explainer=explainer, source_id=source_id,
                                      store=store, label=label, display_name=shown)
            except (SaecoreError, OSError, ValueError) as exc:
                message = str(exc) if not (shown and tmp) else str(exc).replace(str(Path(tmp) / shown), shown)
                st.error(f"Import failed: {message}")
            else:
                verb = "Stored" if store else "Would store"
                st.success(f"{verb} {plural(report.features, 'explanation')} for {target} from "
                           f"{plural(report.records, 'record')} in {report.source} ({report.format} format; "
                           f"explainer {report.chosen_explainer or 'by rule'}).")
                st.caption(f"Rule for several explanations of one feature: {report.rule}.")
                summary = pd.DataFrame([
                    {"what": "records read", "count": report.records},
                    {"what": "features kept", "count": report.features},
                    {"what": "features with several usable explanations", "count": len(report.duplicates)},
                    {"what": "features whose explanations all failed or were empty", "count": len(report.failed)},
                    {"what": f"indices outside 0…{(report.d_sae or 0) - 1}", "count": len(report.out_of_range)}])
                table(summary)
                for w in report.warnings:
                    st.warning(w)
                if len(report.kept):
                    table(report.kept.head(20))
