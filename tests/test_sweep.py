"""Sweeps over a generated workspace on local threads and on a real local Ray cluster (2 CPUs, started once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saecore.cli import main
from saecore.consistency import MatchCache
from saecore.errors import InputError
from saecore.sweep import load_sweep_results, run_sweep
from workspaces import related_decoders, write_saelens

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"topk_k8": 8, "topk_k16": 16, "topk_k32": 32}
SEEDS, D_SAE, D_IN = 3, 256, 32
N_TASKS = len(FAMILIES) * SEEDS * (SEEDS - 1) // 2


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    """3 TopK families × 3 seeds × 256 latents in SAELens layout."""
    root = tmp_path_factory.mktemp("sweep")
    for f, (name, k) in enumerate(FAMILIES.items()):
        for s, dec in enumerate(related_decoders(SEEDS, D_SAE, D_IN, noise=0.3, seed=10 + f)):
            write_saelens(root / name / f"seed{s}", dec, architecture="topk", k=k, seed=s)
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs for the whole module (saecore reaches its workers through the executor)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_result(sweep_root, tmp_path_factory):
    return run_sweep(sweep_root, "local", workers=1, cache=MatchCache(tmp_path_factory.mktemp("local-cache")))


def _values(result) -> dict[tuple[str, int, int], float]:
    return {(f, p.a, p.b): p.pw_mcc for f, fam in result.families.items() for p in fam.pairs}


def die_once(marker: Path):
    """A task hook whose first call (in any worker) kills the worker process without cleanup."""
    def hook(names):
        try:  # exclusive create: of two workers starting together, exactly one dies
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {names}".encode())
        os.close(fd)
        os._exit(1)
    return hook


def test_local_sweep_matches_every_pair_within_each_family(local_result):
    assert local_result.tasks.to_json() == {"total": N_TASKS, "cached": 0, "computed": N_TASKS, "failed": 0}
    assert all(len(fam.pairs) == 3 and len(fam.runs) == 3 for fam in local_result.families.values())
    assert all(0.5 < v < 1.0 for v in _values(local_result).values())


def test_ray_gives_the_same_pw_mcc_as_local(ray_cluster, sweep_root, local_result, tmp_path):
    result = run_sweep(sweep_root, "ray", cache=MatchCache(tmp_path))
    assert result.tasks.computed == N_TASKS
    local, remote = _values(local_result), _values(result)
    assert local.keys() == remote.keys()
    assert max(abs(local[k] - remote[k]) for k in local) < 1e-9


def test_worker_that_dies_is_retried_and_leaves_no_partial_entry(ray_cluster, sweep_root, local_result, tmp_path):
    marker = tmp_path / "died"
    cache = MatchCache(tmp_path / "cache")
    result = run_sweep(sweep_root, "ray", cache=cache, task_hook=die_once(marker))
    assert marker.exists()  # one worker really exited mid-task
    assert result.tasks.failed == 0 and result.tasks.computed == N_TASKS and not result.errors
    local, remote = _values(local_result), _values(result)
    assert max(abs(local[k] - remote[k]) for k in local) < 1e-9
    assert sorted(p.suffix for p in cache.root.iterdir()) == [".npz"] * N_TASKS


def test_worker_death_without_retries_is_reported_as_a_failed_task(ray_cluster, sweep_root, tmp_path):
    cache = MatchCache(tmp_path / "cache")
    result = run_sweep(sweep_root, "ray", cache=cache, task_hook=die_once(tmp_path / "died"), max_retries=0)
    assert result.tasks.failed == 1 and result.tasks.computed == N_TASKS - 1
    assert len(result.errors) == 1 and "failed" in result.errors[0].reason
    assert len(result.missing) == 1 and len(list(cache.root.glob("*.npz"))) == N_TASKS - 1


def test_second_ray_sweep_computes_nothing(ray_cluster, sweep_root, tmp_path):
    cache = MatchCache(tmp_path)
    first = run_sweep(sweep_root, "ray", cache=cache)
    second = run_sweep(sweep_root, "ray", cache=cache)
    assert second.tasks.to_json() == {"total": N_TASKS, "cached": N_TASKS, "computed": 0, "failed": 0}
    assert _values(second) == pytest.approx(_values(first), abs=1e-12)


def test_interrupted_sweep_resumes_from_its_cache(sweep_root, tmp_path):
    cache = MatchCache(tmp_path)

    def stop_after_first(done, total, message):
        if message.startswith("matched"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep_root, "local", cache=cache, progress=stop_after_first)
    resumed = run_sweep(sweep_root, "local", cache=cache)
    assert resumed.tasks.cached == 1 and resumed.tasks.computed == N_TASKS - 1


def test_bad_runs_are_reported_while_other_families_finish(sweep_root, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(sweep_root, root)
    (root / "topk_k8" / "seed1" / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    cfg_path = root / "topk_k16" / "seed2" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "d_in": 48}))  # the weights are 32-wide
    result = run_sweep(root, "local", cache=MatchCache(tmp_path / "cache"))
    reasons = {e.path: e.reason for e in result.errors}
    assert set(reasons) == {"topk_k8/seed1", "topk_k16/seed2"}
    assert "sae_weights.safetensors" in reasons["topk_k8/seed1"] and "d_in=48" in reasons["topk_k16/seed2"]
    fams = {f.runs[0].split("/")[0]: f for f in result.families.values()}
    assert fams["topk_k8"].runs == ["topk_k8/seed0", "topk_k8/seed2"] and len(fams["topk_k8"].pairs) == 1
    assert len(fams["topk_k32"].pairs) == 3 and fams["topk_k32"].mean is not None
    assert result.tasks.failed == 0 and result.tasks.computed == result.tasks.total


def test_a_family_with_one_run_is_listed_without_pairs(sweep_root, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(sweep_root / "topk_k8", root / "topk_k8")
    write_saelens(root / "topk_k64" / "seed0", related_decoders(1, D_SAE, D_IN)[0], architecture="topk", k=64, seed=0)
    out = run_sweep(root, "local", cache=MatchCache(tmp_path / "cache")).to_json()
    single = next(f for f in out["families"].values() if f["runs"] == ["topk_k64/seed0"])
    assert single == {"runs": ["topk_k64/seed0"], "pairs": [], "mean": None, "std": None}
    assert out["tasks"]["total"] == 3


def test_load_sweep_results_reads_the_cache_and_lists_missing_tasks(sweep_root, local_result, tmp_path):
    cache = MatchCache(tmp_path)
    empty = load_sweep_results(sweep_root, cache=cache)
    assert len(empty.missing) == N_TASKS and empty.tasks.computed == 0
    assert all(f.pairs == [] and f.mean is None for f in empty.families.values())
    run_sweep(sweep_root, "local", cache=cache)
    full = load_sweep_results(sweep_root, cache=cache)
    assert full.missing == [] and full.tasks.cached == N_TASKS
    assert _values(full) == pytest.approx(_values(local_result), abs=1e-12)


def test_sweep_results_are_the_entries_cached_match_reads(sweep_root, tmp_path):
    from saecore.consistency import cached_match
    from saecore.loaders import load_run

    cache = MatchCache(tmp_path)
    result = run_sweep(sweep_root, "local", cache=cache)
    a, b = load_run(sweep_root / "topk_k8" / "seed0"), load_run(sweep_root / "topk_k8" / "seed2")
    match, hit = cached_match(a, b, cache=cache)
    fam = next(f for f in result.families.values() if f.runs[0].startswith("topk_k8/"))
    assert hit and match.mcc == next(p.pw_mcc for p in fam.pairs if (p.a, p.b) == (0, 2))


def test_cli_json_contract(ray_cluster, sweep_root, tmp_path, capsys):
    assert main(["sweep", str(sweep_root), "--executor", "ray", "--json", "--cache", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"families", "tasks", "errors", "seconds"}
    assert out["tasks"] == {"total": N_TASKS, "cached": 0, "computed": N_TASKS, "failed": 0}
    assert out["errors"] == [] and isinstance(out["seconds"], float)
    fam = next(f for f in out["families"].values() if f["runs"][0].startswith("topk_k16/"))
    assert set(fam) == {"runs", "pairs", "mean", "std"}
    assert fam["runs"] == ["topk_k16/seed0", "topk_k16/seed1", "topk_k16/seed2"]
    assert [(p["a"], p["b"]) for p in fam["pairs"]] == [(0, 1), (0, 2), (1, 2)]
    assert set(fam["pairs"][0]) == {"a", "b", "pw_mcc"}
    vals = [p["pw_mcc"] for p in fam["pairs"]]
    assert fam["mean"] == pytest.approx(sum(vals) / 3)


def test_cli_reports_an_unknown_executor(sweep_root):
    with pytest.raises(SystemExit):
        main(["sweep", str(sweep_root), "--executor", "dask"])


def test_run_sweep_rejects_an_unknown_executor(sweep_root, tmp_path):
    with pytest.raises(InputError, match="executor must be one of"):
        run_sweep(sweep_root, "dask", cache=MatchCache(tmp_path))


def test_ray_executor_refuses_cuda_without_gpus(ray_cluster, sweep_root, tmp_path):
    with pytest.raises(InputError, match="no GPUs"):
        run_sweep(sweep_root, "ray", device="cuda", cache=MatchCache(tmp_path))


def test_local_sweep_never_imports_ray(sweep_root, tmp_path):
    code = ("import sys; from saecore.sweep import run_sweep; from saecore.consistency import MatchCache; "
            f"r = run_sweep({str(sweep_root)!r}, cache=MatchCache({str(tmp_path)!r})); "
            "assert r.tasks.computed > 0; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_local_executor_restores_torch_threads(sweep_root, tmp_path):
    before = torch.get_num_threads()
    run_sweep(sweep_root, "local", workers=2, cache=MatchCache(tmp_path))
    assert torch.get_num_threads() == before
