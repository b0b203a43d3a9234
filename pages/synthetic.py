"""Synthetic lab: the model organism with known ground truth — committed reproduction and new experiments."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import page, share
from dashboard.state import publish
from dashboard.tables import table as show_table
from saecore.cache import read_parquet
from saecore.errors import SaecoreError
from saecore.plots.style import caption_of
from saecore.plots.synthetic import experiment_figure
from saecore.sae import ARCHITECTURES
from saecore.synthetic import PUBLISHED, PUBLISHED_APPROX, REGIMES, DataConfig, run_experiment

RESULTS = Path(__file__).resolve().parents[1] / "data" / "synthetic"
RUN_KEY = "synthetic_run_config"
STOPPED_KEY = "synthetic_run_stopped"


@st.cache_data(show_spinner=False)
def committed(folder: str, mtime: float) -> tuple[dict, pd.DataFrame]:
    """A committed result.json and its curves (mtime in the key: a rewritten file is read again)."""
    summary = json.loads((Path(folder) / "result.json").read_text())
    curves, _ = read_parquet(Path(folder) / "curves.parquet")
    return summary, curves


def finals_table(summary: dict, with_paper: bool) -> pd.DataFrame:
    """One row per architecture: final GT-MCC, PW-MCC, L0 (and the paper's values in the matched regime)."""
    rows = []
    for arch, r in summary["results"].items():
        row = {"architecture": arch, "step": r.get("steps_done", summary["steps"]),
               "GT-MCC": r["gt_mcc_mean"], "PW-MCC": r["pw_mcc_mean"], "L0": r["l0_mean"]}
        if with_paper:
            paper = PUBLISHED.get(arch, {})
            row["GT-MCC (paper)"] = paper.get("gt_mcc_mean")
            row["PW-MCC (paper)"] = paper.get("pw_mcc_mean")
        rows.append(row)
    return pd.DataFrame(rows)


def show(summary: dict, curves: pd.DataFrame, key: str) -> None:
    """Finals table and the MCC curves with downloads."""
    if not summary.get("completed", True):
        st.warning(f"Partial run: training stopped before step {summary['steps']:,} "
                   "(see the step column); the curves end where it stopped.")
    matched = summary["regime"] == "matched" and summary["data"] == asdict(REGIMES["matched"].data)
    table = finals_table(summary, matched)
    formats = {c: st.column_config.NumberColumn(format="%.4f") for c in table.columns if "MCC" in c}
    formats["L0"] = st.column_config.NumberColumn(format="%.2f")
    show_table(table, key=f"table_{key}", column_config=formats)
    approx = PUBLISHED_APPROX.get(summary["regime"])
    if approx:
        st.caption(f"Paper, read off its figure (approximate): GT-MCC ≈ {approx['gt_mcc_mean']:.2f}, "
                   f"PW-MCC ≈ {approx['pw_mcc_mean']:.2f}. Training here: lr {summary.get('train', {}).get('lr')}, "
                   f"{summary['steps']:,} steps, N = {summary['data']['n_samples']:,}.")
    fig = experiment_figure(summary, curves)
    share.chart(fig, curves, caption_of(fig), key)
    share.table_section(f"Final values ({summary['regime']})", table)


publish(page.start("🧪 Synthetic lab", "Sparse data made from a **known dictionary**: GT-MCC says how well each SAE "
                   "recovered the truth, PW-MCC how well seeds agree with each other. If PW-MCC tracks GT-MCC here, "
                   "it is a usable proxy on real models, where no ground truth exists."))

st.header("Reproduction")
folders = sorted(p for p in RESULTS.glob("*") if (p / "result.json").exists()) if RESULTS.exists() else []
if not folders:
    st.info(f"No committed results under {RESULTS}. Run `python -m saecore synthetic --out data/synthetic/matched`.")
else:
    names = [p.name for p in folders]
    name = st.container(key="controls_regime").selectbox(
        "Regime", names, index=names.index("matched") if "matched" in names else 0, key="synthetic_committed_regime")
    folder = RESULTS / name
    summary, curves = committed(str(folder), (folder / "result.json").stat().st_mtime)
    show(summary, curves, f"committed_{name}")
    command = folder / "COMMAND.txt"
    if command.exists():
        st.caption("Reproduce with:")
        st.code(command.read_text().strip(), language="bash")

with st.container(key="controls_experiment"):
    st.header("Run an experiment")
    with st.form("synthetic_form"):
        regime = st.selectbox("Start from regime", list(REGIMES), key="synthetic_regime")
        base = REGIMES[regime]
        c1, c2, c3, c4 = st.columns(4)
        n_features = c1.number_input("true features", 2, 5000, base.data.n_features, key=f"syn_nf_{regime}")
        d_in = c2.number_input("d_in", 2, 1024, base.data.d_in, key=f"syn_din_{regime}")
        k = c3.number_input("true k", 1, 256, base.data.k, key=f"syn_k_{regime}")
        n_samples = c4.number_input("samples N", 100, 200_000, 5_000, step=1000, key=f"syn_n_{regime}",
                                    help="the paper used 50,000; fewer trains faster")
        c1, c2, c3, c4 = st.columns(4)
        d_sae = c1.number_input("SAE latents", 2, 10_000, base.d_sae, key=f"syn_dsae_{regime}")
        sae_k = c2.number_input("SAE k (topk, batchtopk)", 1, 256, base.data.k, key=f"syn_saek_{regime}")
        n_seeds = c3.number_input("seeds", 1, 10, 3, key="syn_seeds", help="seeds 42, 43, ...")
        steps = c4.number_input("steps", 10, 30_000, 2_000, step=500, key="syn_steps")
        c1, c2, c3, c4 = st.columns(4)
        archs = c1.multiselect("architectures", ARCHITECTURES, ["topk", "standard"], key="syn_archs")
        lr = c2.number_input("learning rate", 1e-5, 1e-1, 1e-3, format="%.5f", key="syn_lr",
                             help="the paper: 1e-4 for 30,000 steps")
        zipf = c3.number_input("Zipf exponent (0 = uniform)", 0.0, 3.0, 0.0, step=0.1, key="syn_zipf")
        noise = c4.number_input("noise σ", 0.0, 1.0, 0.0, step=0.01, key="syn_noise")
        submitted = st.form_submit_button("Train", type="primary")

if submitted:
    st.session_state[RUN_KEY] = {
        "data": {"n_features": int(n_features), "d_in": int(d_in), "k": int(k), "n_samples": int(n_samples),
                 "zipf_exponent": float(zipf) or None, "noise_std": float(noise)},
        "d_sae": int(d_sae), "k": int(sae_k), "archs": list(archs), "seeds": list(range(42, 42 + int(n_seeds))),
        "steps": int(steps), "lr": float(lr), "regime": regime}
    st.session_state[STOPPED_KEY] = False


def stop() -> None:
    st.session_state[STOPPED_KEY] = True


config = st.session_state.get(RUN_KEY)
if config:
    if st.session_state.get(STOPPED_KEY):
        st.info("Stopped. Progress is kept: training again with the same settings resumes where it stopped.")
        if st.button("Resume", key="syn_resume"):
            st.session_state[STOPPED_KEY] = False
            st.rerun()
    else:
        # The Stop button lives only while training runs: its slot is emptied however the run ends.
        stop_slot = st.empty()
        stop_slot.button("Stop", on_click=stop, key="syn_stop", help="stops the run; its progress is kept for later")
        bar = st.progress(0.0, text="starting")
        try:
            data = DataConfig(**config["data"])
            result = run_experiment(data, config["d_sae"], config["archs"], config["seeds"], config["steps"],
                                    k=config["k"], regime="custom", device="auto", lr=config["lr"],
                                    log_every=max(1, config["steps"] // 100),
                                    progress=lambda d, t, m: bar.progress(min(d / max(t, 1), 1.0), text=m))
        except SaecoreError as exc:
            st.error(f"Cannot run this setting: {exc}")
        else:
            show(result.summary(), result.curves(), "new_run")
        finally:
            stop_slot.empty()
            bar.empty()

share.report_button("Synthetic lab", "SAE consistency on data with a known dictionary")
