"""Sweeps: every within-family pairwise matching of a workspace, run on local threads or Ray, stored in the MatchCache.

Planning happens in the driver: `scan` finds the runs, each run is loaded once to take its
weight fingerprint (a few runs at a time on threads), and every unordered pair (i < j) inside
a family becomes a task keyed exactly as `MatchCache.key` keys it, so the CLI and the dashboard
read sweep results unchanged.
Tasks already in the cache are skipped; the rest run on an executor and the driver writes each
result to the cache (atomically) as soon as it arrives, so an interrupted sweep resumes where
it stopped and a worker that dies mid-task leaves nothing behind.

Executors: 'local' (threads on this machine; torch's intra-op threads are split between them)
and 'ray' (Ray Core tasks; each decoder is put in the object store once and passed by
reference; tasks are retried when their worker dies). Ray is imported only by the Ray executor.

Memory: decoders of planned runs stay in the driver up to `memory_budget` bytes; beyond that a
family's runs are read again when its tasks are submitted (and checked against the planned
fingerprint). Families are submitted in order while fewer than `window` tasks are in flight, so
only the decoders of the families being matched are held at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saecore.consistency import MatchCache
from saecore.errors import InputError, LoadError, SaecoreError
from saecore.loaders import load_run
from saecore.matching import DEAD_POLICIES, Match, match_decoders
from saecore.metrics import PairScore
from saecore.runs import FAMILY_FIELDS, Run, RunMeta
from saecore.similarity import check_sign
from saecore.workspace import scan

Progress = Callable[[int, int, str], None]
TaskHook = Callable[[tuple[str, str]], None]

EXECUTORS = ("local", "ray")
DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes of decoders the driver keeps between planning and matching
RAY_MAX_RETRIES = 3


@dataclass(frozen=True)
class SweepError:
    """A run that could not be read, or a matching that failed, with the file and the reason."""

    path: str
    reason: str

    def to_json(self) -> dict:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class PairTask:
    """One matching: runs a < b of a family (indices into its run list), under its cache key."""

    family: str
    a: int
    b: int
    key: str


@dataclass
class FamilyPlan:
    """A family's readable runs (paths relative to the root), their fingerprints and its pair tasks."""

    name: str
    runs: list[RunMeta]
    paths: list[str]
    fingerprints: list[str]
    tasks: list[PairTask]


@dataclass
class SweepPlan:
    """What a sweep has to do: families, their tasks, and the runs that could not be read."""

    root: str
    sign: str
    dead: str
    families: dict[str, FamilyPlan]
    errors: list[SweepError]

    @property
    def tasks(self) -> list[PairTask]:
        return [t for f in self.families.values() for t in f.tasks]


@dataclass
class FamilyResult:
    """PW-MCC of one family: its runs (relative paths) and every finished pair."""

    runs: list[str]
    pairs: list[PairScore]

    @property
    def mean(self) -> float | None:
        return float(np.mean([p.pw_mcc for p in self.pairs])) if self.pairs else None

    @property
    def std(self) -> float | None:
        return float(np.std([p.pw_mcc for p in self.pairs], ddof=0)) if self.pairs else None

    def to_json(self) -> dict:
        return {"runs": list(self.runs), "pairs": [{"a": p.a, "b": p.b, "pw_mcc": p.pw_mcc} for p in self.pairs],
                "mean": self.mean, "std": self.std}


@dataclass
class TaskCounts:
    """How the sweep's tasks ended: taken from the cache, computed now, or failed."""

    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0

    @property
    def done(self) -> int:
        return self.cached + self.computed + self.failed

    def to_json(self) -> dict:
        return {"total": self.total, "cached": self.cached, "computed": self.computed, "failed": self.failed}


@dataclass
class SweepResult:
    """Per-family PW-MCC of a workspace, task counts, errors and wall time.

    Families with a single readable run are included with no pairs and null mean/std.
    `missing` lists tasks that have no result (not computed yet, or failed).
    """

    root: str
    sign: str
    dead: str
    families: dict[str, FamilyResult]
    tasks: TaskCounts
    errors: list[SweepError]
    seconds: float
    missing: list[PairTask] = field(default_factory=list)

    def to_json(self) -> dict:
        """The `python -m saecore sweep --json` object."""
        return {"families": {k: f.to_json() for k, f in self.families.items()}, "tasks": self.tasks.to_json(),
                "errors": [e.to_json() for e in self.errors], "seconds": self.seconds}


def _relative(path: str | Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _reason(exc: BaseException, run_path: str | Path | None = None) -> str:
    """The problem, naming the file inside the run when the error is about one."""
    problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    file = getattr(exc, "path", None)
    if file and run_path is not None and Path(file) != Path(run_path):
        return f"{Path(file).name}: {problem}"
    return problem


def _load(meta: RunMeta, d_in: int | None) -> Run:
    return load_run(meta.path, d_in=d_in, name=meta.name, with_encoder=False)  # sweeps only match decoders


def _check_options(sign: str, dead: str) -> None:
    check_sign(sign)
    if dead not in DEAD_POLICIES:
        raise InputError(f"dead must be one of {DEAD_POLICIES}, got {dead!r}")


def _read(meta: RunMeta, d_in: int | None) -> Run | BaseException:
    """A run with its fingerprint taken (hashing while the weights are in memory), or the reason it failed."""
    try:
        run = _load(meta, d_in)
        run.fingerprint  # noqa: B018
        return run
    except (SaecoreError, OSError, ValueError, KeyError, RuntimeError) as exc:
        return exc


def plan_sweep(root: str | Path, sign: str = "signed", dead: str = "include", *, d_in: int | None = None,
               family_fields: tuple[str, ...] = FAMILY_FIELDS, progress: Progress | None = None,
               keep: dict[str, Run] | None = None, memory_budget: int = 0, readers: int | None = None) -> SweepPlan:
    """Scan `root`, read each run once for its fingerprint and key every within-family pair (i < j).

    Runs are read family by family, `readers` at a time (threads: reading and hashing release the GIL).
    A run that cannot be read leaves its family (reported in `errors`); the rest of the family is
    planned without it. Loaded runs are put in `keep` (by path) while their decoders fit `memory_budget`.
    """
    from concurrent.futures import ThreadPoolExecutor

    _check_options(sign, dead)
    root = Path(root)
    ws = scan(root, family_fields=family_fields, d_in=d_in)
    errors = [SweepError(_relative(e.path, root), e.reason) for e in ws.errors]
    families = ws.families
    n_runs = sum(len(v) for v in families.values())
    kept_bytes = 0
    read = 0
    plans: dict[str, FamilyPlan] = {}
    with ThreadPoolExecutor(readers or min(4, os.cpu_count() or 1), thread_name_prefix="saecore-read") as pool:
        for name, metas in families.items():
            if progress:
                progress(read, n_runs, f"reading {name}")
            runs: list[Run] = []
            for meta, got in zip(metas, pool.map(lambda m: _read(m, d_in), metas)):
                if isinstance(got, BaseException):
                    errors.append(SweepError(_relative(meta.path, root), _reason(got, meta.path)))
                else:
                    runs.append(got)
            read += len(metas)
            if not runs:
                continue  # every run of this family is in `errors`
            tasks = [PairTask(name, i, j, MatchCache.key(runs[i], runs[j], sign, dead))
                     for i, j in itertools.combinations(range(len(runs)), 2)]
            plans[name] = FamilyPlan(name, [r.meta for r in runs], [_relative(r.meta.path, root) for r in runs],
                                     [r.fingerprint for r in runs], tasks)
            if keep is not None:
                for r in runs:
                    size = r.decoder.numel() * r.decoder.element_size()
                    if kept_bytes + size <= memory_budget:
                        keep[r.meta.path] = r
                        kept_bytes += size
    if progress:
        progress(n_runs, n_runs, "runs read")
    return SweepPlan(str(root), sign, dead, plans, errors)


def _match_task(dec_a, dec_b, sign: str, dead: str, device: str, method: str, names: tuple[str, str],
                hook: TaskHook | None = None) -> Match:
    """Worker side of one task: match two decoders (tensors or read-only arrays from an object store)."""
    if hook is not None:
        hook(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arrays from Ray's object store are read-only views
        a, b = torch.as_tensor(dec_a), torch.as_tensor(dec_b)
    return match_decoders(a, b, sign, dead, device, method, names)


class TaskFailed(Exception):
    """A task ended without a result (an exception in the matcher, or a worker that kept dying)."""


class LocalExecutor:
    """Tasks on threads of this process; torch's intra-op threads are divided between the workers."""

    def __init__(self, workers: int | None = None, device: str = "auto", task_hook: TaskHook | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.workers = max(1, workers or 1)
        self.device = device
        self.window = 2 * self.workers
        self._hook = task_hook
        self._threads = torch.get_num_threads()
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="saecore-sweep")

    def share(self, run: Run):
        return run.decoder

    def submit(self, ref_a, ref_b, sign: str, dead: str, method: str, names: tuple[str, str]):
        return self._pool.submit(_match_task, ref_a, ref_b, sign, dead, self.device, method, names, self._hook)

    def wait(self, futures: list) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(futures, return_when=FIRST_COMPLETED).done)

    def cancel(self, futures: list) -> None:
        for f in futures:
            f.cancel()

    def result(self, future) -> Match:
        try:
            return future.result()
        except (SaecoreError, ValueError, RuntimeError, OSError) as exc:
            raise TaskFailed(_reason(exc)) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self._threads)


class RayExecutor:
    """Ray Core tasks: a local Ray (started here, shut down after) or an existing cluster (`address`).

    The saecore package travels to the workers as a runtime_env py_module when this class starts or
    joins Ray; with a Ray the caller initialised without it, tasks get this checkout on PYTHONPATH.
    Tasks on CUDA request `gpus_per_task` GPUs each; a worker that dies is retried `max_retries` times.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, device: str = "auto",
                 max_retries: int = RAY_MAX_RETRIES, gpus_per_task: float = 1.0, task_hook: TaskHook | None = None):
        import ray

        import saecore

        self._ray = ray
        self._started = False
        self._task_env: dict | None = None
        if not ray.is_initialized():
            kwargs: dict = {"runtime_env": {"py_modules": [saecore]}, "logging_level": logging.WARNING,
                            "log_to_driver": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, **kwargs)
            self._started = True
        elif "py_modules" not in ray.get_runtime_context().runtime_env:
            # A Ray started by the caller without saecore: point its workers at this checkout (same
            # filesystem; elsewhere the entry is ignored and an installed saecore is used).
            path = [str(Path(saecore.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
            self._task_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, path))}}
        resources = ray.cluster_resources()
        n_gpus = int(resources.get("GPU", 0))
        if device == "auto":
            device = "cuda" if n_gpus else "cpu"
        options: dict = {"num_cpus": 1, "max_retries": max_retries, "retry_exceptions": False}
        if self._task_env:
            options["runtime_env"] = self._task_env
        if str(device).startswith("cuda"):
            if not n_gpus:
                self.close()
                raise InputError("device 'cuda' was asked for, but the Ray cluster has no GPUs")
            options["num_gpus"] = gpus_per_task
            slots = max(1, int(n_gpus / gpus_per_task))
        else:
            slots = max(1, int(resources.get("CPU", 1)))
        self.device = device
        self.window = workers if workers else 2 * slots
        self._hook = ray.put(task_hook) if task_hook is not None else None
        self._remote = ray.remote(_match_task).options(**options)

    def share(self, run: Run):
        """The decoder in the object store, once; tasks receive the reference."""
        return self._ray.put(run.decoder.numpy())

    def submit(self, ref_a, ref_b, sign: str, dead: str, method: str, names: tuple[str, str]):
        return self._remote.remote(ref_a, ref_b, sign, dead, self.device, method, names, self._hook)

    def wait(self, futures: list) -> list:
        done, _ = self._ray.wait(futures, num_returns=1)
        return done

    def cancel(self, futures: list) -> None:
        for f in futures:
            self._ray.cancel(f)

    def result(self, future) -> Match:
        from ray.exceptions import RayError, RayTaskError

        try:
            return self._ray.get(future)
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise TaskFailed(_reason(cause)) from exc
        except RayError as exc:
            raise TaskFailed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


def make_executor(executor: str = "local", *, workers: int | None = None, ray_address: str | None = None,
                  device: str = "auto", max_retries: int = RAY_MAX_RETRIES, gpus_per_task: float = 1.0,
                  task_hook: TaskHook | None = None):
    """An executor by name: 'local' (threads) or 'ray'."""
    if executor == "local":
        return LocalExecutor(workers, device, task_hook)
    if executor == "ray":
        return RayExecutor(ray_address, workers, device, max_retries, gpus_per_task, task_hook)
    raise InputError(f"executor must be one of {EXECUTORS}, got {executor!r}")


def _collect(plan: SweepPlan, scores: dict[str, PairScore], counts: TaskCounts, errors: list[SweepError],
             seconds: float) -> SweepResult:
    families = {name: FamilyResult(f.paths, [scores[t.key] for t in f.tasks if t.key in scores])
                for name, f in plan.families.items()}
    missing = [t for t in plan.tasks if t.key not in scores]
    return SweepResult(plan.root, plan.sign, plan.dead, families, counts, errors, seconds, missing)


def _score(task: PairTask, match: Match) -> PairScore:
    return PairScore(task.a, task.b, match.mcc, match.n_matched)


def load_sweep_results(root: str | Path, sign: str = "signed", dead: str = "include", *,
                       cache: MatchCache | None = None, d_in: int | None = None,
                       family_fields: tuple[str, ...] = FAMILY_FIELDS, progress: Progress | None = None,
                       readers: int | None = None) -> SweepResult:
    """What the cache already holds for a workspace's sweep, computing nothing; `missing` lists the rest."""
    t0 = time.perf_counter()
    cache = cache or MatchCache()
    plan = plan_sweep(root, sign, dead, d_in=d_in, family_fields=family_fields, progress=progress, readers=readers)
    scores = {t.key: _score(t, m) for t in plan.tasks if (m := cache.load(t.key)) is not None}
    counts = TaskCounts(total=len(plan.tasks), cached=len(scores))
    return _collect(plan, scores, counts, list(plan.errors), time.perf_counter() - t0)


def run_sweep(root: str | Path, executor: str = "local", *, workers: int | None = None, ray_address: str | None = None,
              sign: str = "signed", dead: str = "include", device: str = "auto", method: str = "auto",
              cache: MatchCache | None = None, d_in: int | None = None, family_fields: tuple[str, ...] = FAMILY_FIELDS,
              progress: Progress | None = None, max_retries: int = RAY_MAX_RETRIES, gpus_per_task: float = 1.0,
              memory_budget: int = DEFAULT_MEMORY_BUDGET, readers: int | None = None,
              task_hook: TaskHook | None = None) -> SweepResult:
    """Match every pair of runs inside every family under `root`; cached pairs are skipped, new ones cached.

    `progress(done, total, message)` is called while runs are read (done/total count runs) and then
    per task (done/total count tasks; the message gives computed, cached and failed so far).
    `task_hook` is called in the worker with the pair's names before each task (fault-injection tests).
    """
    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    cache = cache or MatchCache()
    kept: dict[str, Run] = {}
    plan = plan_sweep(root, sign, dead, d_in=d_in, family_fields=family_fields, progress=progress,
                      keep=kept, memory_budget=memory_budget, readers=readers)
    errors = list(plan.errors)
    counts = TaskCounts(total=len(plan.tasks))
    scores: dict[str, PairScore] = {}
    todo: dict[str, list[PairTask]] = {}
    for name, fam in plan.families.items():
        for t in fam.tasks:
            hit = cache.load(t.key)
            if hit is not None:
                scores[t.key] = _score(t, hit)
                counts.cached += 1
            else:
                todo.setdefault(name, []).append(t)

    def report(message: str) -> None:
        if progress:
            progress(counts.done, counts.total,
                     f"{message} ({counts.computed} computed, {counts.cached} cached, {counts.failed} failed)")

    needed = {plan.families[t.family].runs[i].path for ts in todo.values() for t in ts for i in (t.a, t.b)}
    for path in [p for p in kept if p not in needed]:
        del kept[path]  # fully cached families need no decoders
    report("cache checked")
    if todo:
        ex = make_executor(executor, workers=workers, ray_address=ray_address, device=device,
                           max_retries=max_retries, gpus_per_task=gpus_per_task, task_hook=task_hook)
        try:
            _execute(plan, todo, ex, kept, cache, d_in, method, scores, counts, errors, report)
        finally:
            ex.close()
    return _collect(plan, scores, counts, errors, time.perf_counter() - t0)


def _family_refs(fam: FamilyPlan, tasks: list[PairTask], ex, kept: dict[str, Run], d_in: int | None,
                 root: Path) -> dict[int, object]:
    """Each run a family's pending tasks need, shared with the executor once (re-read when not kept)."""
    refs: dict[int, object] = {}
    for i in sorted({t.a for t in tasks} | {t.b for t in tasks}):
        meta = fam.runs[i]
        run = kept.pop(meta.path, None) or _load(meta, d_in)
        if run.fingerprint != fam.fingerprints[i]:
            raise LoadError(meta.path, "changed on disk while the sweep ran")
        refs[i] = ex.share(run)
    return refs


def _execute(plan: SweepPlan, todo: dict[str, list[PairTask]], ex, kept: dict[str, Run], cache: MatchCache,
             d_in: int | None, method: str, scores: dict[str, PairScore], counts: TaskCounts,
             errors: list[SweepError], report: Callable[[str], None]) -> None:
    """Submit families in order while fewer than `ex.window` tasks are in flight; store each result as it lands."""
    root = Path(plan.root)
    in_flight: dict[object, PairTask] = {}
    refs: dict[str, dict[int, object]] = {}
    left: dict[str, int] = {}

    def finish(task: PairTask) -> None:
        left[task.family] -= 1
        if not left[task.family]:
            refs.pop(task.family, None)  # the family's decoders can leave the object store

    def drain() -> None:
        for fut in ex.wait(list(in_flight)):
            task = in_flight.pop(fut)
            fam = plan.families[task.family]
            try:
                match = ex.result(fut)
            except TaskFailed as exc:
                counts.failed += 1
                errors.append(SweepError(fam.paths[task.a], f"matching with {fam.paths[task.b]} failed: {exc}"))
                report(f"failed {fam.paths[task.a]} ↔ {fam.paths[task.b]}")
            else:
                cache.store(task.key, match)
                scores[task.key] = _score(task, match)
                counts.computed += 1
                report(f"matched {fam.paths[task.a]} ↔ {fam.paths[task.b]}")
            finish(task)

    try:
        for name, tasks in todo.items():
            fam = plan.families[name]
            try:
                refs[name] = _family_refs(fam, tasks, ex, kept, d_in, root)
            except (SaecoreError, OSError, ValueError, KeyError, RuntimeError) as exc:
                counts.failed += len(tasks)
                path = getattr(exc, "path", None) or fam.runs[tasks[0].a].path
                errors.append(SweepError(_relative(path, root), _reason(exc)))
                report(f"skipped family {name}")
                continue
            left[name] = len(tasks)
            for t in tasks:
                while len(in_flight) >= ex.window:
                    drain()
                names = (fam.paths[t.a], fam.paths[t.b])
                in_flight[ex.submit(refs[name][t.a], refs[name][t.b], plan.sign, plan.dead, method, names)] = t
        while in_flight:
            drain()
    except BaseException:
        ex.cancel(list(in_flight))  # interrupted: stop queued work; finished results are already cached
        raise
