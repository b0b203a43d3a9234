"""Running the app under AppTest with a chosen workspace and page."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from saecore.features import FeatureData

ROOT = Path(__file__).resolve().parents[2]
# The entry script sits in a folder without pages/: Streamlit then never falls back to legacy multipage mode.
APP = str(Path(__file__).resolve().parent / "entry" / "app.py")


def open_app(params: dict, page: str | None = None, timeout: float = 120) -> AppTest:
    """The app run once with these query params (then switched to `page` when given)."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page is not None:
        at.switch_page(str(ROOT / page))
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def values(data) -> np.ndarray:
    """A plotly JSON array (a list or a typed-array dict {dtype, bdata, shape}) as numpy."""
    if isinstance(data, dict) and "bdata" in data:
        arr = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        shape = data.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in str(shape).split(",")] if isinstance(shape, str) else shape)
        return arr
    return np.asarray(data, dtype=float)


def feature_data(d_sae: int, seed: int) -> FeatureData:
    """Statistics for every feature and two short contexts for features 0-9 (one with markup to escape)."""
    rng = np.random.default_rng(seed)
    freq = 10 ** rng.uniform(-5, -1, d_sae)
    stats = pd.DataFrame({"feature": np.arange(d_sae), "frequency": freq, "per_million": freq * 1e6,
                          "mean_activation": rng.uniform(0.5, 1, d_sae), "max_activation": rng.uniform(1, 3, d_sae),
                          "count": (freq * 1e5).astype(int)})
    records = []
    for f in range(10):
        for rank, tokens in enumerate([["The", " cat", " sat", " <script>"], ["A", " dog", " ran", " &"]]):
            acts = np.array([0.0, 2.0 - rank, 0.5, 0.1], np.float32)
            records.append((f, "top", rank, tokens, acts, f * 10 + rank, f, 1, float(acts.max()), ""))
    contexts = pd.DataFrame.from_records(records, columns=["feature", "kind", "rank", "tokens", "activations", "row",
                                                           "doc", "position", "activation", "quantile_bin"])
    return FeatureData(stats, contexts, {"n_tokens": 100000})
