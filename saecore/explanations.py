"""Feature explanations stored with a run, and importers for the formats other tools export them in."""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from saecore.cache import atomic_write_parquet, read_parquet
from saecore.errors import InputError, LoadError
from saecore.features import feature_file
from saecore.loaders.tensors import load_json
from saecore.runs import Run, RunMeta
from saecore.text import plural

EXPLANATIONS_FILE = "explanations.parquet"
COLUMNS = ("feature", "explanation", "explainer", "source")
# Texts tools write when they failed to produce an explanation (compared case-insensitively, stripped).
FAILURE_TEXTS = frozenset({
    "", "explanation could not be parsed.", "explanation could not be parsed", "none", "null", "n/a", "nan",
    "failed to generate explanation", "error",
})
DUPLICATE_RULE = ("one explanation per feature: the explainer with the most records in the file wins "
                  "(ties: more usable explanations, then alphabetical), then the first one in file order")


def explanations_path(run_path: str | Path) -> Path:
    """`<run folder>/explanations.parquet`, or `<file>.explanations.parquet` beside a single-file run."""
    return feature_file(run_path, EXPLANATIONS_FILE)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"feature": pd.Series([], dtype="int64"), "explanation": pd.Series([], dtype=object),
                         "explainer": pd.Series([], dtype=object), "source": pd.Series([], dtype=object)})


def read_explanations(run_path: str | Path) -> pd.DataFrame:
    """The explanations stored with a run (feature, explanation, explainer, source); empty when there are none."""
    path = explanations_path(run_path)
    if not path.is_file():
        return _empty()
    df, _ = read_parquet(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise LoadError(path, f"missing columns {', '.join(missing)}")
    return df[list(COLUMNS)].astype({"feature": "int64"}).reset_index(drop=True)


def _check_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Validate the columns and types of explanations about to be stored."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"explanations to store lack columns {', '.join(missing)} (need {', '.join(COLUMNS)})")
    out = df[list(COLUMNS)].copy()
    out["feature"] = out["feature"].astype("int64")
    for c in ("explanation", "explainer", "source"):
        out[c] = out[c].astype(str)
    if out.duplicated(["feature", "explainer"]).any():
        dup = out[out.duplicated(["feature", "explainer"], keep=False)].iloc[0]
        raise InputError(f"explanations to store hold feature {dup.feature} twice for explainer {dup.explainer!r}")
    return out


def store_explanations(run_path: str | Path, df: pd.DataFrame, mode: str = "merge") -> Path:
    """Write explanations into the run's explanations file atomically.

    mode 'merge': rows for the same (feature, explainer) are replaced, all others kept (incremental jobs).
    mode 'replace': every stored row of the explainers present in `df` is dropped first (re-imports).
    """
    if mode not in ("merge", "replace"):
        raise InputError(f"mode must be 'merge' or 'replace', got {mode!r}")
    new = _check_frame(df)
    old = read_explanations(run_path)
    if mode == "replace":
        old = old[~old["explainer"].isin(set(new["explainer"]))]
    else:
        keys = set(zip(new["feature"], new["explainer"]))
        old = old[[k not in keys for k in zip(old["feature"], old["explainer"])]]
    merged = pd.concat([old, new], ignore_index=True) if len(old) else new
    merged = merged.sort_values(["explainer", "feature"], kind="stable").reset_index(drop=True)
    return atomic_write_parquet(explanations_path(run_path), merged, {"columns": list(COLUMNS)})


def explainer_counts(df: pd.DataFrame) -> dict[str, int]:
    """How many features each explainer explains, most first."""
    return dict(Counter(df["explainer"]).most_common())


def pick_explainer(df: pd.DataFrame, explainer: str | None = None) -> pd.DataFrame:
    """One explanation per feature: the named explainer's, else the explainer covering the most features."""
    if df.empty:
        return df
    counts = explainer_counts(df)
    if explainer is None:
        explainer = sorted(counts, key=lambda e: (-counts[e], e))[0]
    if explainer not in counts:
        raise InputError(f"no explanations by {explainer!r}; stored explainers: {', '.join(counts)}")
    return df[df["explainer"] == explainer].drop_duplicates("feature").reset_index(drop=True)


# --------------------------------------------------------------------------- importers

@dataclass(frozen=True)
class Record:
    """One explanation as read from a source, before validation."""

    index: int
    text: str | None
    explainer: str | None = None
    source_id: str | None = None  # which SAE the source says it explains (Neuronpedia layer, delphi hookpoint)
    model_id: str | None = None


def is_failure(text: str | None) -> bool:
    """True for missing, empty or known failure texts."""
    return text is None or str(text).strip().lower() in FAILURE_TEXTS


def _index(value: object, where: str) -> int:
    """A feature index from an int or an integer string; anything else is an error naming where it was."""
    if isinstance(value, bool):
        raise LoadError(where, f"feature index {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise LoadError(where, f"feature index {value!r} is not an integer")


def _neuronpedia_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for folder in (path / "explanations", path):
        files = sorted(folder.glob("batch-*.jsonl.gz")) + sorted(folder.glob("batch-*.jsonl"))
        if files:
            return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    return []


def _neuronpedia_record(obj: object, where: str) -> Record:
    if not isinstance(obj, dict) or "index" not in obj:
        raise LoadError(where, "expected an object with 'index' and 'description'")
    return Record(_index(obj["index"], where), obj.get("description"), obj.get("explanationModelName") or obj.get("typeName"),
                  obj.get("layer"), obj.get("modelId"))


def _read_neuronpedia(path: Path) -> Iterator[Record]:
    """Neuronpedia bulk export: batch-<n>.jsonl.gz files, one JSON object per line."""
    for f in _neuronpedia_files(path):
        opener = gzip.open if f.name.endswith(".gz") else open
        try:
            with opener(f, "rt", encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise LoadError(f"{f}:{n}", f"not a JSON line ({exc.msg})") from None
                    yield _neuronpedia_record(obj, f"{f}:{n}")
        except (OSError, EOFError) as exc:
            raise LoadError(f, f"cannot read ({exc})") from None


def _read_neuronpedia_json(path: Path) -> Iterator[Record]:
    """Neuronpedia legacy export: one JSON array of explanation objects."""
    data = load_json(path)
    if not isinstance(data, list):
        raise LoadError(path, "expected a JSON array of explanation objects")
    for i, obj in enumerate(data):
        yield _neuronpedia_record(obj, f"{path}[{i}]")


DELPHI_NAME = re.compile(r"^(?P<hook>.*)_latent(?P<index>\d+)\.txt$")


def _delphi_files(path: Path) -> list[Path]:
    for folder in (path / "explanations", path):
        if folder.is_dir():
            files = [p for p in folder.iterdir() if p.is_file() and DELPHI_NAME.match(p.name)]
            if files:
                return sorted(files)
    return []


def _read_delphi(path: Path) -> Iterator[Record]:
    """delphi: explanations/<hookpoint>_latent<i>.txt, each body a JSON-encoded string."""
    for f in _delphi_files(path):
        m = DELPHI_NAME.match(f.name)
        body = f.read_text(encoding="utf-8")
        try:
            text = json.loads(body)
        except json.JSONDecodeError:
            text = body  # older files hold the bare text
        if text is not None and not isinstance(text, str):
            raise LoadError(f, f"expected a JSON string, got {type(text).__name__}")
        yield Record(int(m["index"]), text, None, m["hook"], None)


def _read_saebench(path: Path) -> Iterator[Record]:
    """SAEBench autointerp result: eval_result_unstructured maps latent index to {explanation, score, ...}."""
    data = load_json(path)
    results = data.get("eval_result_unstructured") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise LoadError(path, "no 'eval_result_unstructured' object (not an SAEBench autointerp result)")
    config = data.get("eval_config") or {}
    source = data.get("sae_lens_id") or None
    for key, value in results.items():
        where = f"{path}: eval_result_unstructured[{key!r}]"
        text = value.get("explanation") if isinstance(value, dict) else value
        yield Record(_index(key, where), text, None, source, config.get("model_name"))


def _read_csv(path: Path) -> Iterator[Record]:
    """Plain CSV with columns index (or feature) and explanation; an explainer column is optional."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        key = "index" if "index" in cols else "feature" if "feature" in cols else None
        if key is None or "explanation" not in cols:
            raise LoadError(path, f"expected columns 'index' and 'explanation', found {', '.join(cols) or 'none'}")
        for n, row in enumerate(reader, 2):
            yield Record(_index(row[key], f"{path}:{n}"), row["explanation"], row.get("explainer") or None)


def _read_json_map(path: Path) -> Iterator[Record]:
    """Plain JSON object mapping feature index to explanation text."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise LoadError(path, "expected a JSON object mapping feature index to explanation text")
    for key, value in data.items():
        where = f"{path}: key {key!r}"
        if isinstance(value, dict):
            value = value.get("explanation", value.get("description"))
        if value is not None and not isinstance(value, str):
            raise LoadError(where, f"expected a text, got {type(value).__name__}")
        yield Record(_index(key, where), value)


def _json_kind(path: Path) -> str | None:
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if isinstance(data, list):
        return "list"
    if isinstance(data, dict):
        return "saebench" if "eval_result_unstructured" in data else "map"
    return None


@dataclass(frozen=True)
class Importer:
    """One source format: how to recognise it and how to read its records."""

    name: str
    matches: Callable[[Path], bool]
    read: Callable[[Path], Iterator[Record]]
    default_explainer: str


# Detection order matters: the first importer whose `matches` accepts the path reads it.
IMPORTERS: dict[str, Importer] = {i.name: i for i in (
    Importer("neuronpedia", lambda p: bool(re.search(r"\.jsonl(\.gz)?$", p.name)) or (p.is_dir() and bool(_neuronpedia_files(p))),
             _read_neuronpedia, "neuronpedia"),
    Importer("delphi", lambda p: p.is_dir() and bool(_delphi_files(p)), _read_delphi, "delphi"),
    Importer("saebench", lambda p: _json_kind(p) == "saebench", _read_saebench, "saebench-autointerp"),
    Importer("neuronpedia-json", lambda p: _json_kind(p) == "list", _read_neuronpedia_json, "neuronpedia"),
    Importer("json", lambda p: _json_kind(p) == "map", _read_json_map, "imported"),
    Importer("csv", lambda p: p.suffix.lower() == ".csv", _read_csv, "imported"),
)}


def detect_format(source: str | Path) -> str:
    """The name of the importer that reads `source`, or a LoadError saying what was found."""
    path = Path(source)
    if not path.exists():
        raise LoadError(path, "no such file or folder")
    for name, imp in IMPORTERS.items():
        if imp.matches(path):
            return name
    if path.is_dir():
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "empty folder"
        raise LoadError(path, f"no explanations found (expected explanations/batch-*.jsonl.gz or "
                              f"explanations/<hookpoint>_latent<i>.txt; contents: {listing})")
    raise LoadError(path, "unknown explanation format (expected .jsonl.gz, .json or .csv)")


# --------------------------------------------------------------------------- import report

@dataclass
class ImportReport:
    """What an import read, kept and dropped, and whether the source looks like it belongs to the run."""

    source: str
    format: str
    run: str | None
    d_sae: int | None
    records: int
    explainers: dict[str, int]  # explainer -> records in the source
    chosen_explainer: str | None
    rule: str
    kept: pd.DataFrame  # feature, explanation, explainer, source: what is (or would be) stored
    duplicates: list[int] = field(default_factory=list)  # indices with more than one usable explanation
    failed: list[int] = field(default_factory=list)  # indices whose explanations were all empty or failure texts
    out_of_range: list[int] = field(default_factory=list)  # indices < 0 or >= d_sae
    source_ids: dict[str, int] = field(default_factory=dict)  # SAE ids named by the source -> records
    model_ids: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stored_to: str | None = None

    @property
    def features(self) -> int:
        return int(len(self.kept))

    def to_json(self) -> dict:
        return {
            "source": self.source, "format": self.format, "run": self.run, "d_sae": self.d_sae,
            "records": self.records, "features": self.features, "duplicates": len(self.duplicates),
            "failed": len(self.failed), "out_of_range": len(self.out_of_range),
            "duplicate_indices": self.duplicates, "failed_indices": self.failed,
            "out_of_range_indices": self.out_of_range, "explainers": self.explainers,
            "chosen_explainer": self.chosen_explainer, "rule": self.rule, "source_ids": self.source_ids,
            "model_ids": self.model_ids, "warnings": self.warnings, "stored_to": self.stored_to,
        }


def _short_model(name: str | None) -> str | None:
    """'google/gemma-2-2b' and 'gemma-2-2b' compare equal; case and separators are ignored."""
    if not name:
        return None
    return re.sub(r"[^a-z0-9]", "", str(name).split("/")[-1].lower())


def _layer_number(text: str | None) -> int | None:
    """The layer a hook name or source id points at (blocks.8.hook_resid_post, 8-res-jb, layers.8, layer_8)."""
    if not text:
        return None
    m = re.match(r"^(\d+)-", text) or re.search(r"(?:blocks|layers|layer|h)[._](\d+)", text)
    return int(m.group(1)) if m else None


def _width(text: str | None) -> int | None:
    """A dictionary width named in a Neuronpedia source id: '16k' -> 16384, '32768' is not a width."""
    m = re.search(r"(?:^|-)(\d+)k(?:-|$)", text or "")
    return int(m.group(1)) * 1024 if m else None


def _mismatch_warnings(meta: RunMeta | None, source_ids: Counter, model_ids: Counter) -> list[str]:
    """Hints that the source explains a different SAE than the run (model, layer, width)."""
    if meta is None:
        return []
    out = []
    if meta.model and model_ids:
        for mid, n in model_ids.items():
            if _short_model(mid) != _short_model(meta.model):
                out.append(f"{n} records name model {mid!r}, the run's model is {meta.model!r}")
    run_layer = _layer_number(meta.hook)
    for sid, n in source_ids.items():
        layer = _layer_number(sid)
        if run_layer is not None and layer is not None and layer != run_layer:
            out.append(f"{n} records are for {sid!r} (layer {layer}), the run hooks {meta.hook!r} (layer {run_layer})")
        width = _width(sid)
        if width is not None and width != meta.d_sae:
            out.append(f"{n} records are for {sid!r} (width {width}), the run has d_sae {meta.d_sae}")
    return out


def _as_meta(run: RunMeta | Run | str | Path | None) -> RunMeta | None:
    if run is None or isinstance(run, RunMeta):
        return run
    if isinstance(run, Run):
        return run.meta
    from saecore.loaders import load_meta

    return load_meta(run)


def _renamed(exc: LoadError, path: Path, name: str) -> LoadError:
    """The same error naming `name` where it named `path` (a temporary copy's location means nothing to a user)."""
    return LoadError(exc.path.replace(str(path), name, 1), exc.problem.replace(str(path), name))


def import_explanations(source: str | Path, run: RunMeta | Run | str | Path | None, explainer: str | None = None,
                        format: str | None = None, source_id: str | None = None, store: bool = True,
                        label: str | None = None, display_name: str | None = None) -> ImportReport:
    """Read explanations from `source`, check them against `run` and (by default) store them with it.

    explainer: keep only this explainer's explanations (else one per feature by DUPLICATE_RULE).
    source_id: for sources that cover several SAEs (Neuronpedia layers, delphi hookpoints), the one to read.
    label: the explainer name stored for formats that do not name their explainer (default: the format's).
    display_name: the name messages, the report and the stored source column use instead of the path (an upload's
    real file name when `source` is a temporary copy of it).
    """
    path = Path(source)
    shown = display_name or str(path)
    meta = _as_meta(run)
    try:
        fmt = format or detect_format(path)
        if fmt not in IMPORTERS:
            raise InputError(f"unknown explanation format {fmt!r}; known: {', '.join(IMPORTERS)}")
        imp = IMPORTERS[fmt]
        records = list(imp.read(path))
    except LoadError as exc:
        if display_name is None:
            raise
        raise _renamed(exc, path, display_name) from None
    if not records:
        raise LoadError(shown, f"no explanation records found ({fmt} format)")
    default_name = label or imp.default_explainer
    records = [r if r.explainer else Record(r.index, r.text, default_name, r.source_id, r.model_id) for r in records]
    n_records = len(records)
    source_ids = Counter(r.source_id for r in records if r.source_id)
    model_ids = Counter(r.model_id for r in records if r.model_id)
    warnings: list[str] = []

    if source_id is not None:
        if source_id not in source_ids:
            raise InputError(f"{shown}: no records for source {source_id!r}; found {', '.join(source_ids) or 'none'}")
        records = [r for r in records if r.source_id == source_id]
    elif len(source_ids) > 1:
        fitting = [s for s in source_ids if meta is not None and not _mismatch_warnings(meta, Counter({s: 1}), Counter())]
        if len(fitting) != 1:
            raise InputError(f"{shown}: explanations for {len(source_ids)} different SAEs ({', '.join(source_ids)}); "
                             f"choose one with source_id / --source")
        source_id = fitting[0]
        records = [r for r in records if r.source_id == source_id]
        warnings.append(f"source covers {len(source_ids)} SAEs; read {source_id!r}, which fits the run's hook")
    warnings += _mismatch_warnings(meta, Counter(r.source_id for r in records if r.source_id),
                                   Counter(r.model_id for r in records if r.model_id))

    explainers = dict(Counter(r.explainer for r in records).most_common())
    if explainer is not None:
        if explainer not in explainers:
            raise InputError(f"{shown}: no explanations by {explainer!r}; explainers in the file: {', '.join(explainers)}")
        records = [r for r in records if r.explainer == explainer]

    d_sae = meta.d_sae if meta is not None else None
    out_of_range = sorted({r.index for r in records if r.index < 0 or (d_sae is not None and r.index >= d_sae)})
    bad = set(out_of_range)
    records = [r for r in records if r.index not in bad]
    usable = [r for r in records if not is_failure(r.text)]
    per_index = Counter(r.index for r in usable)
    duplicates = sorted(i for i, n in per_index.items() if n > 1)
    failed = sorted({r.index for r in records} - set(per_index))

    usable_by_explainer = Counter(r.explainer for r in usable)
    order = sorted(usable_by_explainer, key=lambda e: (-explainers.get(e, 0), -usable_by_explainer[e], e))
    rank = {e: n for n, e in enumerate(order)}
    best: dict[int, tuple[int, int, Record]] = {}
    for order, r in enumerate(usable):
        cand = (rank[r.explainer], order, r)
        if r.index not in best or cand[:2] < best[r.index][:2]:
            best[r.index] = cand
    chosen = [best[i][2] for i in sorted(best)]
    src = display_name or str(path.resolve())
    kept = pd.DataFrame({"feature": pd.Series([r.index for r in chosen], dtype="int64"),
                         "explanation": pd.Series([str(r.text).strip() for r in chosen], dtype=object),
                         "explainer": pd.Series([r.explainer for r in chosen], dtype=object),
                         "source": pd.Series([src] * len(chosen), dtype=object)})
    if out_of_range:
        n_out = len(out_of_range)
        warnings.append(f"{plural(n_out, 'index', 'indices')} {'does' if n_out == 1 else 'do'} not fit "
                        f"the run's d_sae {d_sae} (e.g. {', '.join(map(str, out_of_range[:5]))}): not imported; "
                        "is this export for another SAE?")
    if d_sae is None:
        warnings.append("no run given: indices were not checked against d_sae")
    rule = f"explainer {explainer!r} chosen" if explainer is not None else DUPLICATE_RULE
    report = ImportReport(shown, fmt, meta.name if meta else None, d_sae, n_records, explainers, explainer, rule,
                          kept, duplicates, failed, out_of_range, dict(source_ids), dict(model_ids), warnings)
    if store:
        if meta is None:
            raise InputError("cannot store explanations without a run")
        if kept.empty:
            raise InputError(f"{shown}: no usable explanation fits run {meta.name}; nothing stored")
        report.stored_to = str(store_explanations(meta.path, kept, mode="replace"))
    return report
