"""Reading delphi's detection and fuzzing score files (`scores/<scorer>/<module>_latent<N>.txt`) into scores.parquet."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from saecore.errors import InputError, LoadError
from saecore.loaders.tensors import load_json
from saecore.scoring import FeatureScore, explanation_hash, score_answers, scores_frame, store_scores

# delphi's scorer folders and the method each one measures.
DELPHI_SCORERS = {"detection": "detection", "fuzz": "fuzzing", "fuzzing": "fuzzing"}
DELPHI_FILE = re.compile(r"^(?P<module>.*)_latent(?P<index>\d+)\.txt$")


@dataclass
class DelphiImport:
    """What an import of delphi score files read and stored."""

    source: str
    module: str | None
    scores: pd.DataFrame
    files: dict[str, int]  # scorer folder -> files read
    skipped: dict[str, int]  # scorer folders that are not detection or fuzzing -> files
    warnings: list[str] = field(default_factory=list)
    stored_to: str | None = None

    def to_json(self) -> dict:
        by_method = {m: {"features": int((self.scores["method"] == m).sum()),
                         "mean": (round(float(v), 4) if not math.isnan(v := self.scores.loc[self.scores["method"] == m,
                                                                                            "score"].mean()) else None)}
                     for m in sorted(set(self.scores["method"]))}
        return {"source": self.source, "module": self.module, "files": self.files, "skipped": self.skipped,
                "methods": by_method, "warnings": self.warnings, "stored_to": self.stored_to}


def _flag(value: object) -> bool | None:
    """A record's truth or prediction as a bool: bools, 0/1 and probabilities (>= 0.5 is 1); None when missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value) >= 0.5
    raise ValueError(f"{value!r} is not a boolean or 0/1")


def delphi_record(record: object, where: str) -> tuple[bool, bool | None]:
    """(activating, prediction) of one delphi example record; prediction None when the judge gave no answer.

    Accepted fields: truth in `activating` (delphi) or `ground_truth` (sae-auto-interp); the judge's answer in
    `prediction` (bool, 0/1 or a probability), else derived from `correct` (bool).
    """
    if not isinstance(record, dict):
        raise LoadError(where, f"expected an object per example, got {type(record).__name__}")
    try:
        truth = _flag(record.get("activating", record.get("ground_truth")))
        if truth is None:
            raise ValueError("no 'activating' or 'ground_truth' field")
        prediction = _flag(record.get("prediction"))
        if prediction is None:
            correct = _flag(record.get("correct"))
            prediction = None if correct is None else (truth if correct else not truth)
    except ValueError as exc:
        raise LoadError(where, str(exc)) from None
    return truth, prediction


def read_delphi_file(path: Path) -> tuple[float, int, int]:
    """(balanced accuracy, examples, examples without an answer) of one delphi score file."""
    data = load_json(path)
    if not isinstance(data, list):
        raise LoadError(path, f"expected a JSON list of example records, got {type(data).__name__}")
    pairs = [delphi_record(r, f"{path}[{i}]") for i, r in enumerate(data)]
    score, n_failed = score_answers([t for t, _ in pairs], [None if p is None else int(p) for _, p in pairs])
    return score, len(pairs), n_failed


def _delphi_folders(path: Path) -> list[Path]:
    """Scorer folders under a delphi results folder, its scores/ folder, or the scorer folder itself."""
    path = Path(path)
    if not path.is_dir():
        raise LoadError(path, "no such folder")
    root = path / "scores" if (path / "scores").is_dir() else path
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and any(DELPHI_FILE.match(p.name) for p in d.iterdir())]
    if not folders and any(DELPHI_FILE.match(p.name) for p in root.iterdir()):
        folders = [root]
    if not folders:
        raise LoadError(path, "no delphi score files (scores/<scorer>/<module>_latent<N>.txt)")
    return folders


def _delphi_explanation(folder: Path, name: str) -> str:
    """The hash of the delphi explanation the scores in `folder` were made for, when delphi's explanations/ is there."""
    for root in (folder.parent.parent, folder.parent):
        p = root / "explanations" / name
        if p.is_file():
            body = p.read_text(encoding="utf-8")
            try:
                text = json.loads(body)
            except json.JSONDecodeError:
                text = body
            return explanation_hash(text) if isinstance(text, str) else ""
    return ""


def import_delphi_scores(source: str | Path, run_path: str | Path, module: str | None = None,
                         explainer: str = "delphi", store: bool = True) -> DelphiImport:
    """Read delphi's per-latent score files (detection and fuzz scorers) and store their balanced accuracies.

    source: a delphi results folder, its scores/ folder, or one scorer folder. module: the hookpoint to read
    when the files cover several. Latent indices outside the run's d_sae are errors naming the file.
    """
    from saecore.loaders import load_meta

    src = Path(source)
    d_sae = load_meta(run_path).d_sae
    folders = _delphi_folders(src)
    files: dict[Path, list[tuple[str, int, Path]]] = {}
    modules: set[str] = set()
    skipped: dict[str, int] = {}
    for d in folders:
        matched = [(m["module"], int(m["index"]), p) for p in sorted(d.iterdir()) if (m := DELPHI_FILE.match(p.name))]
        if d.name not in DELPHI_SCORERS:
            skipped[d.name] = len(matched)
            continue
        files[d] = matched
        modules |= {m for m, _, _ in matched}
    if not files:
        raise LoadError(src, f"no detection or fuzz scores (found scorers {', '.join(skipped)})")
    if module is None and len(modules) > 1:
        raise InputError(f"{src}: scores for {len(modules)} modules ({', '.join(sorted(modules))}); choose one")
    if module is not None and module not in modules:
        raise InputError(f"{src}: no scores for module {module!r}; found {', '.join(sorted(modules))}")
    module = module or next(iter(modules))
    results, counts = [], {}
    label = f"delphi:{src.resolve()}"
    for d, matched in files.items():
        method = DELPHI_SCORERS[d.name]
        mine = [(i, p) for m, i, p in matched if m == module]
        counts[d.name] = len(mine)
        for index, p in mine:
            if index >= d_sae:
                raise LoadError(p, f"latent {index} is outside the run's d_sae {d_sae}; are these scores for another SAE?")
            score, n, n_failed = read_delphi_file(p)
            results.append(FeatureScore(index, method, score, n, n_failed, explainer, _delphi_explanation(d, p.name),
                                        label, "delphi"))
    by_key = {(r.feature, r.method): r for r in results}  # "fuzz" and "fuzzing" folders both present: last wins
    report = DelphiImport(str(src), module, scores_frame(list(by_key.values())), counts, skipped)
    if len(by_key) < len(results):
        report.warnings.append("several scorer folders measure the same method; the last one read was kept")
    if skipped:
        report.warnings.append(f"not imported (not detection or fuzzing): {', '.join(skipped)}")
    if store and len(report.scores):
        report.stored_to = str(store_scores(run_path, report.scores))
    return report
