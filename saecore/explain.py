"""Explanations of features from their top-activating contexts, through any OpenAI-compatible chat endpoint.

The client is passed in (or built from an ExplainerConfig); every answer is cached on disk per feature, so an
interrupted job resumes where it stopped. The API key lives only inside the client object: it is never stored
in the config, the cache, results, logs or error messages.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from saecore.cache import atomic_write_json, content_key, default_cache_dir
from saecore.errors import InputError, SaecoreError
from saecore.features import Context
from saecore.prompts import (JUDGE_VERSION, PROMPT_VERSION, explain_messages, judge_messages, parse_explanation,
                             parse_judge_score)
from saecore.text import plural

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]

DEFAULT_ENDPOINT = "http://127.0.0.1:8012/v1"
DEFAULT_MODEL = "smollm2-135m-instruct"
API_KEY_ENV = "OPENAI_API_KEY"
LOCAL_KEY = "local"  # llama.cpp and similar local servers accept any key


class ExplainerError(SaecoreError):
    """The endpoint refused the whole job (wrong key or model, unreachable, long rate limit): nothing more is sent."""


@dataclass(frozen=True)
class ExplainerConfig:
    """Where and how explanations are requested. Holds no API key on purpose."""

    base_url: str = DEFAULT_ENDPOINT
    model: str = DEFAULT_MODEL
    temperature: float = 0.0
    max_tokens: int = 30
    concurrency: int = 2
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # extra attempts after 429, timeouts, 5xx and dropped connections
    backoff: float = 1.0  # first retry delay in seconds; doubles each attempt
    max_retry_after: float = 60.0  # a longer Retry-After stops the job instead of waiting
    n_top: int = 8  # strongest contexts shown
    n_quantile: int = 2  # lower-activation samples shown
    stop: tuple[str, ...] = ("\n",)

    def to_json(self) -> dict:
        return asdict(self)


def _is_local(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def resolve_api_key(typed: str | None, key_env: str | None = API_KEY_ENV,
                    environ: Mapping[str, str] | None = None) -> str | None:
    """The key typed by the user, else the value of the environment variable they named; None when neither is set."""
    if typed and typed.strip():
        return typed.strip()
    name = (key_env or "").strip()
    value = (os.environ if environ is None else environ).get(name, "") if name else ""
    return value.strip() or None


def key_fingerprint(api_key: str | None) -> str:
    """A short one-way digest of a key, to tell keys apart in cache keys without storing the key ('' for none)."""
    import hashlib

    return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""


def build_client(config: ExplainerConfig, api_key: str | None = None, key_env: str = API_KEY_ENV):
    """An openai.OpenAI client for `config.base_url`; the key comes from the caller, else the variable `key_env`.

    Local endpoints (127.0.0.1, localhost) work without a key. The client does no retries of its own:
    retries, backoff and Retry-After are handled here.
    """
    import openai

    key = resolve_api_key(api_key, key_env)
    if not key:
        if not _is_local(config.base_url):
            raise ExplainerError(f"no API key for {config.base_url}: set {key_env} or pass api_key")
        key = LOCAL_KEY
    return openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout, max_retries=0)


# --------------------------------------------------------------------------- is an endpoint there?

@dataclass(frozen=True)
class EndpointStatus:
    """What GET <base_url>/models said: whether an OpenAI-compatible server answers there, and if not, why."""

    reachable: bool  # answered with a model list; anything else is a `problem`
    models: list[str] = field(default_factory=list)
    problem: str | None = None

    def describe(self, shown: int = 3) -> str:
        """One line for the user: the models a reachable server lists (the first `shown`), else the problem."""
        if not self.reachable:
            return f"Not reachable: {self.problem}"
        names = ", ".join(self.models[:shown]) + (", …" if len(self.models) > shown else "")
        return f"Reachable: lists {plural(len(self.models), 'model')}" + (f" ({names})" if names else "")


def _where(url: str) -> str:
    """host:port of a URL, for messages (never its user info or query)."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def status_problem(code: int, base_url: str) -> str:
    """What an HTTP error status from <base_url>/models means for the user."""
    if code == 401:
        return "the server rejected the API key (HTTP 401): type a key or name the environment variable that holds it"
    if code == 403:
        return "the server denied access (HTTP 403): the key lacks permission for this API"
    if code == 404:
        return (f"{base_url}/models does not exist (HTTP 404): not an OpenAI-compatible base URL "
                f"(it usually ends in /v1, e.g. {DEFAULT_ENDPOINT})")
    if code == 429:
        return "the server is rate limiting (HTTP 429); check again in a moment"
    if code >= 500:
        return f"the server has an internal error (HTTP {code})"
    return f"the server answered HTTP {code} to {base_url}/models"


def connection_problem(reason: object, base_url: str, timeout: float) -> str:
    """What a failure to talk to <base_url> at all (refused, timed out, unknown host, TLS) means for the user."""
    import socket
    import ssl

    where = _where(base_url)
    if isinstance(reason, TimeoutError):
        return f"no answer from {where} within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused: nothing is listening on {where}"
    if isinstance(reason, socket.gaierror):
        return f"unknown host {urlparse(base_url).hostname!r}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS handshake with {where} failed ({getattr(reason, 'reason', None) or 'certificate or protocol'})"
    return f"cannot connect to {where} ({type(reason).__name__})"


def model_ids(body: bytes) -> list[str] | None:
    """Model names from an OpenAI /models body ({"data": [{"id": ...}]}); None when it is not one."""
    import json

    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


def probe_endpoint(base_url: str, api_key: str | None = None, timeout: float = 1.5) -> EndpointStatus:
    """GET <base_url>/models once: is an OpenAI-compatible server there, which models does it list, and if not, why.

    The key is only sent in the Authorization header; no message says it and no server text is passed on.
    """
    import http.client
    import urllib.error
    import urllib.request

    url = base_url.strip().rstrip("/")
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return EndpointStatus(False, [], f"{url!r} is not an http(s) URL (e.g. {DEFAULT_ENDPOINT})")
    try:
        _ = parts.port  # urlparse checks the port only when it is read
    except ValueError as exc:
        return EndpointStatus(False, [], f"{url!r} is not a valid URL ({exc})")
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    # A local server is asked directly: a proxy set in the environment cannot reach 127.0.0.1 on our behalf.
    handlers = [urllib.request.ProxyHandler({})] if _is_local(url) else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url + "/models", headers=headers), timeout=timeout) as resp:
            body = resp.read(2_000_000)
    except urllib.error.HTTPError as exc:
        exc.close()
        return EndpointStatus(False, [], status_problem(exc.code, url))
    except urllib.error.URLError as exc:
        return EndpointStatus(False, [], connection_problem(exc.reason, url, timeout))
    except (OSError, http.client.HTTPException) as exc:
        return EndpointStatus(False, [], connection_problem(exc, url, timeout))
    except ValueError as exc:
        return EndpointStatus(False, [], f"{url!r} is not a valid URL ({exc})")
    models = model_ids(body)
    if models is None:
        return EndpointStatus(False, [], f"{url}/models answered, but not with an OpenAI-style model list; "
                                         f"is this the API's base URL?")
    return EndpointStatus(True, models, None)


def endpoint_help(key_env: str = API_KEY_ENV) -> str:
    """Markdown saying how to use any OpenAI-compatible endpoint with a key kept in an environment variable."""
    return (f"put its base URL (ending in `/v1`, e.g. `https://api.openai.com/v1`) in *Endpoint* and its model name "
            f"in *Model*. Keep the key out of the page: export it before starting the dashboard "
            f"(`export {key_env or API_KEY_ENV}=…`) and name that variable in *API key environment variable*; a key "
            f"typed in the key field takes precedence. Then press *Check again*.")


def generate_blocker(features: Sequence[int], status: EndpointStatus) -> str | None:
    """Why an explanation job cannot start now (no features, no reachable endpoint), or None when it can."""
    if not features:
        return "no features chosen"
    if not status.reachable:
        return "the endpoint is not reachable"
    return None


def model_note(status: EndpointStatus, model: str) -> str | None:
    """A hint when a reachable server does not list `model` (some servers list none, or serve any name)."""
    if not status.reachable or not status.models or model in status.models:
        return None
    shown = ", ".join(status.models[:8]) + (", …" if len(status.models) > 8 else "")
    return f"the server does not list model {model!r}; it lists {shown}"


def _scrub(text: str, client) -> str:
    """Remove the client's key from text that came from a server (an echoing server must not leak it)."""
    key = getattr(client, "api_key", None)
    text = str(text)
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text[:300]


# --------------------------------------------------------------------------- one request with retries

@dataclass
class Answer:
    """One request's outcome: the parsed value, or why there is none."""

    value: object = None  # the parsed explanation (str) or judge score (int)
    raw: str | None = None
    error: str | None = None
    cached: bool = False
    cacheable: bool = True  # a definite answer (also a useless one); transient trouble is not cached
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


def _retry_after(exc) -> float | None:
    """Seconds a 429/503 response asks us to wait (Retry-After or retry-after-ms), if it says."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(float(value) * scale, 0.0)
            except ValueError:
                return None  # an HTTP date: fall back to our own backoff
    return None


def _request(client, config: ExplainerConfig, messages: list[dict], what: str, stop: threading.Event,
             extra: dict | None = None) -> Answer:
    """Send one chat request, retrying transient failures with exponential backoff. Fatal problems raise."""
    import openai

    answer = Answer()
    for attempt in range(config.max_retries + 1):
        if stop.is_set():
            answer.error, answer.cacheable = "job stopped", False
            return answer
        answer.attempts = attempt + 1
        delay = config.backoff * 2 ** attempt * (1 + 0.1 * random.random())
        t0 = time.monotonic()
        try:
            resp = client.chat.completions.create(model=config.model, messages=messages, temperature=config.temperature,
                                                  max_tokens=config.max_tokens, stop=list(config.stop) or None,
                                                  extra_body=extra or None)
        except openai.AuthenticationError:
            raise ExplainerError(f"{config.base_url} rejected the API key (HTTP 401); check {API_KEY_ENV}") from None
        except openai.PermissionDeniedError:
            raise ExplainerError(f"{config.base_url} denied access to model {config.model!r} (HTTP 403)") from None
        except openai.NotFoundError:
            raise ExplainerError(f"{config.base_url} has no model {config.model!r} (HTTP 404); check the model "
                                 f"name and endpoint") from None
        except openai.RateLimitError as exc:
            wait_s = _retry_after(exc)
            if wait_s is not None and wait_s > config.max_retry_after:
                raise ExplainerError(f"{config.base_url} is rate limiting (HTTP 429) and asks to wait {wait_s:.0f} s; "
                                     f"try again later") from None
            answer.error = "rate limited (HTTP 429)"
            delay = wait_s if wait_s is not None else delay
        except openai.APITimeoutError:
            answer.error = f"timed out after {config.timeout:g} s"
        except openai.APIConnectionError:
            answer.error = f"cannot connect to {config.base_url}"
        except openai.InternalServerError as exc:
            answer.error = f"server error (HTTP {exc.status_code})"
            wait_s = _retry_after(exc)
            delay = wait_s if wait_s is not None and wait_s <= config.max_retry_after else delay
        except openai.APIStatusError as exc:  # other 4xx: this request is bad, retrying will not help
            answer.error = f"HTTP {exc.status_code}: {_scrub(exc.message, client)}"
            answer.cacheable = False
            answer.seconds += time.monotonic() - t0
            return answer
        except (openai.APIResponseValidationError, ValueError) as exc:
            answer.error = f"malformed response ({type(exc).__name__})"
        else:
            answer.seconds += time.monotonic() - t0
            return _read_response(resp, answer)
        answer.seconds += time.monotonic() - t0
        if attempt < config.max_retries:
            log.info("%s: %s; retry %d/%d in %.1f s", what, answer.error, attempt + 1, config.max_retries, delay)
            stop.wait(delay)
    if answer.error == f"cannot connect to {config.base_url}":
        tries = plural(config.max_retries + 1, "attempt")
        raise ExplainerError(f"cannot connect to {config.base_url} after {tries}; is the server running?")
    answer.cacheable = False
    return answer


def _read_response(resp, answer: Answer) -> Answer:
    """The text and token usage of a chat completion; a body without them counts as malformed."""
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, KeyError, TypeError):
        answer.error, answer.cacheable = "malformed response (no choices)", False
        return answer
    if content is not None and not isinstance(content, str):
        answer.error, answer.cacheable = "malformed response (content is not text)", False
        return answer
    usage = getattr(resp, "usage", None)
    answer.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    answer.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    answer.raw = content
    answer.error = None
    return answer


# --------------------------------------------------------------------------- cache and job runner

class AnswerCache:
    """One small JSON file per answer under a folder, keyed by everything that determines the answer."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "explanations"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        import json

        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None  # unreadable entry: ask again and overwrite

    def put(self, key: str, entry: dict) -> None:
        atomic_write_json(self.path(key), entry)


@dataclass(frozen=True)
class Job:
    """One chat request: what it is about, its messages, cache key, answer parser and failure text."""

    item: object  # feature index, or (a, b) texts for the judge
    messages: list[dict]
    key: str
    parse: Callable[[str | None], object]
    failure: str  # recorded when the answer parses to nothing
    request: dict | None = None  # extra request body fields, e.g. a JSON-schema response format


def _cached_answer(entry: dict, job: Job) -> Answer:
    """A cached answer, its raw text parsed again (a better parser applies to old answers without new requests)."""
    a = Answer(entry.get("value"), entry.get("raw"), entry.get("error"), True, True,
               int(entry.get("prompt_tokens", 0)), int(entry.get("completion_tokens", 0)),
               float(entry.get("seconds", 0.0)), 0)
    if a.raw is not None and (a.error is None or a.error == job.failure):
        a.value = job.parse(a.raw)
        a.error = None if a.value is not None else job.failure
    return a


def run_jobs(jobs: Sequence[Job], client, config: ExplainerConfig, cache: AnswerCache | None = None,
             retry_failed: bool = False, progress: Progress | None = None,
             on_answer: Callable[[Job, Answer], None] | None = None, label: str = "feature") -> list[Answer]:
    """Answer every job (cache first, then the endpoint with bounded concurrency), in job order.

    A fatal ExplainerError stops the job: pending requests are cancelled, answers so far stay cached and were
    passed to `on_answer`, and the error is raised. Ctrl-C does the same.
    """
    answers: list[Answer | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        entry = cache.get(job.key) if cache is not None else None
        cached = _cached_answer(entry, job) if entry is not None else None
        if cached is not None and (cached.error is None or not retry_failed):
            answers[i] = cached
        else:
            todo.append(i)
    done = len(jobs) - len(todo)
    for i, a in enumerate(answers):
        if a is not None and on_answer is not None:
            on_answer(jobs[i], a)
    if progress:
        progress(done, len(jobs), f"{done} cached")
    if not todo:
        return answers  # type: ignore[return-value]
    stop = threading.Event()

    def work(i: int) -> Answer:
        job = jobs[i]
        a = _request(client, config, job.messages, f"{label} {job.item}", stop, job.request)
        if a.error is None:
            a.value = job.parse(a.raw)
            if a.value is None:
                a.error = job.failure
        if cache is not None and a.cacheable:
            cache.put(job.key, {"value": a.value, "raw": a.raw, "error": a.error, "model": config.model,
                                "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                                "seconds": round(a.seconds, 4)})
        return a

    pool = ThreadPoolExecutor(max_workers=max(1, config.concurrency), thread_name_prefix="explain")
    pending: dict[Future, int] = {}
    queue = iter(todo)
    try:
        # Submit lazily (a few per worker) so that a fatal error leaves little to cancel.
        for i in queue:
            pending[pool.submit(work, i)] = i
            if len(pending) >= 2 * max(1, config.concurrency):
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = pending.pop(fut)
                answers[i] = fut.result()
                done += 1
                if on_answer is not None:
                    on_answer(jobs[i], answers[i])
                if progress:
                    progress(done, len(jobs), f"{label} {jobs[i].item}")
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(work, nxt)] = nxt
    except BaseException:
        stop.set()
        for fut in pending:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return answers  # type: ignore[return-value]


# --------------------------------------------------------------------------- explanations

@dataclass
class FeatureExplanation:
    """The explanation of one feature, or the reason there is none."""

    feature: int
    explanation: str | None
    error: str | None = None
    raw: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.explanation)


@dataclass
class ExplainReport:
    """Every feature's outcome of one explain job, with token and time accounting."""

    model: str
    base_url: str
    prompt_version: str
    results: list[FeatureExplanation] = field(default_factory=list)
    wall_seconds: float = 0.0
    stored_to: str | None = None

    @property
    def n_ok(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def n_cached(self) -> int:
        return sum(r.cached for r in self.results)

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.results if not r.cached)

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.results if not r.cached)

    @property
    def request_seconds(self) -> float:
        return float(sum(r.seconds for r in self.results if not r.cached))

    def failures(self) -> dict[int, str]:
        return {r.feature: r.error or "empty explanation" for r in self.results if not r.ok}

    def frame(self, source: str | None = None) -> pd.DataFrame:
        """The usable explanations as rows for store_explanations (explainer = the model name)."""
        ok = [r for r in self.results if r.ok]
        src = source or f"saecore explain {self.prompt_version} via {self.base_url}"
        return pd.DataFrame({"feature": pd.Series([r.feature for r in ok], dtype="int64"),
                             "explanation": pd.Series([r.explanation for r in ok], dtype=object),
                             "explainer": pd.Series([self.model] * len(ok), dtype=object),
                             "source": pd.Series([src] * len(ok), dtype=object)})

    def to_json(self) -> dict:
        errors: dict[str, int] = {}
        for e in self.failures().values():
            errors[e] = errors.get(e, 0) + 1
        return {"model": self.model, "base_url": self.base_url, "prompt_version": self.prompt_version,
                "features": len(self.results), "explained": self.n_ok, "failed": self.n_failed,
                "cached": self.n_cached, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "request_seconds": round(self.request_seconds, 3),
                "wall_seconds": round(self.wall_seconds, 3), "errors": errors, "stored_to": self.stored_to}


def explain_key(run_key: str, feature: int, config: ExplainerConfig, messages: list[dict]) -> str:
    """Cache key of one feature's explanation: run, feature, prompt version, model, endpoint and the prompt itself."""
    return content_key("explain", run_key, int(feature), PROMPT_VERSION, config.model, config.base_url.rstrip("/"),
                       config.temperature, config.max_tokens, list(config.stop), messages)


def _group(contexts: Sequence[Context] | Mapping[int, Sequence[Context]]) -> dict[int, list[Context]]:
    if isinstance(contexts, Mapping):
        return {int(f): list(c) for f, c in contexts.items()}
    out: dict[int, list[Context]] = {}
    for c in contexts:
        out.setdefault(int(c.feature), []).append(c)
    return out


def explain_contexts(contexts: Sequence[Context] | Mapping[int, Sequence[Context]], client, config: ExplainerConfig,
                     features: Sequence[int] | None = None, cache: AnswerCache | None = None, run_key: str = "",
                     retry_failed: bool = False, progress: Progress | None = None,
                     on_result: Callable[[FeatureExplanation], None] | None = None) -> ExplainReport:
    """Explain each feature from its contexts (all features present, or `features`), one request per feature.

    Features without contexts are reported as failures without a request. Cached answers (also failures, e.g.
    an empty reply) are reused unless `retry_failed`.
    """
    t0 = time.monotonic()
    by_feature = _group(contexts)
    wanted = sorted(by_feature) if features is None else [int(f) for f in dict.fromkeys(features)]
    report = ExplainReport(config.model, config.base_url, PROMPT_VERSION)
    results: dict[int, FeatureExplanation] = {}
    jobs = []
    for f in wanted:
        ctx = [c for c in by_feature.get(f, []) if any(a > 0 for a in c.activations)]
        if not ctx:
            results[f] = FeatureExplanation(f, None, "no activating contexts")
            continue
        messages = explain_messages(ctx, config.n_top, config.n_quantile)
        jobs.append(Job(f, messages, explain_key(run_key, f, config, messages), parse_explanation,
                         "empty or unparseable answer"))

    def collect(job: Job, a: Answer) -> None:
        r = FeatureExplanation(int(job.item), a.value if a.ok else None, a.error, a.raw, a.cached, a.prompt_tokens,
                               a.completion_tokens, a.seconds)
        results[r.feature] = r
        if on_result is not None:
            on_result(r)

    try:
        run_jobs(jobs, client, config, cache, retry_failed, progress, collect)
    finally:
        report.results = [results[f] for f in wanted if f in results]
        report.wall_seconds = time.monotonic() - t0
    return report


def read_feature_contexts(run_path: str | Path, features: Sequence[int] | None = None,
                          max_rows: int = 200_000) -> dict[int, list[Context]]:
    """Contexts of the features asked for: one read of the whole table when it is small, else filtered reads."""
    import pyarrow.parquet as pq

    from saecore.features import CONTEXTS_FILE, feature_file, read_contexts

    path = feature_file(run_path, CONTEXTS_FILE)
    small = path.is_file() and pq.ParquetFile(path).metadata.num_rows <= max_rows
    if features is None or small:
        grouped = _group(read_contexts(run_path))
        return grouped if features is None else {int(f): grouped.get(int(f), []) for f in features}
    return {int(f): read_contexts(run_path, int(f)) for f in dict.fromkeys(features)}


def explain_run(run_path: str | Path, client, config: ExplainerConfig, features: Sequence[int] | None = None,
                cache: AnswerCache | None = None, store: bool = True, store_every: int = 50,
                retry_failed: bool = False, progress: Progress | None = None,
                contexts: Mapping[int, Sequence[Context]] | None = None) -> ExplainReport:
    """Explain features of the run at `run_path` from its stored contexts and store the explanations with it.

    Explanations are written into the run's explanations file every `store_every` answers and at the end, also
    when the job stops early, so the file always agrees with what was answered. `contexts` (feature -> contexts,
    from read_feature_contexts) saves re-reading them when a job is run in parts.
    """
    from saecore.explanations import store_explanations

    if contexts is None:
        contexts = read_feature_contexts(run_path, features)
    run_key = str(Path(run_path).resolve())
    cache = cache if cache is not None else AnswerCache()
    unsaved: list[FeatureExplanation] = []
    saved_to: list[str] = []
    report_holder: list[ExplainReport] = []

    def flush() -> None:
        if store and unsaved:
            part = ExplainReport(config.model, config.base_url, PROMPT_VERSION, list(unsaved))
            df = part.frame()
            unsaved.clear()
            if len(df):
                saved_to[:] = [str(store_explanations(run_path, df, mode="merge"))]

    def on_result(r: FeatureExplanation) -> None:
        if r.ok:
            unsaved.append(r)
            if len(unsaved) >= store_every:
                flush()

    try:
        report_holder.append(explain_contexts(contexts, client, config, features, cache, run_key, retry_failed,
                                              progress, on_result))
    finally:
        flush()
    report = report_holder[0]
    report.stored_to = saved_to[0] if saved_to else None
    return report


# --------------------------------------------------------------------------- selecting features

def sample_features(available: Sequence[int], n: int, seed: int = 0) -> list[int]:
    """A seeded random sample of n features (all when n is larger), sorted."""
    available = np.unique(np.asarray(available, dtype=np.int64))
    if n >= len(available):
        return available.tolist()
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(available, size=n, replace=False)).tolist()


def even_quota(sizes: Sequence[int], n: int) -> list[int]:
    """n items spread as evenly as possible over groups of the given sizes (a small group gives all it has)."""
    quota = [0] * len(sizes)
    left = min(int(n), int(sum(sizes)))
    while left > 0:
        open_groups = [i for i, s in enumerate(sizes) if quota[i] < s]
        share = max(left // len(open_groups), 1)
        for i in open_groups:
            take = min(share, sizes[i] - quota[i], left)
            quota[i] += take
            left -= take
            if left == 0:
                break
    return quota


def stratified_pairs(match, n: int, n_bins: int = 5, seed: int = 0, allowed_a: Sequence[int] | None = None,
                     allowed_b: Sequence[int] | None = None) -> pd.DataFrame:
    """Up to n matched pairs spread evenly over log-spaced bins of match score (as in the semantic table).

    Only pairs with a positive score whose features are in allowed_a / allowed_b (e.g. those with contexts)
    are drawn; a bin with too few pairs gives all it has and the rest goes to the other bins.
    Returns feature_a, feature_b, score, bin, in round-robin order over the bins.
    """
    from saecore.semantic import assign_bins, log_score_edges

    df = pd.DataFrame({"feature_a": np.asarray(match.rows, np.int64), "feature_b": np.asarray(match.cols, np.int64),
                       "score": np.asarray(match.scores, np.float64)})
    df = df[df["score"] > 0]
    if allowed_a is not None:
        df = df[df["feature_a"].isin(set(int(x) for x in allowed_a))]
    if allowed_b is not None:
        df = df[df["feature_b"].isin(set(int(x) for x in allowed_b))]
    if df.empty or n <= 0:
        return df.assign(bin=pd.Series([], dtype="int64")).reset_index(drop=True)
    edges = log_score_edges(df["score"].to_numpy(), n_bins)
    df = df.assign(bin=assign_bins(df["score"].to_numpy(), edges))
    sizes = df.groupby("bin").size().reindex(range(n_bins), fill_value=0).to_numpy()
    quota = even_quota([int(x) for x in sizes], n)
    parts = []
    for b in range(n_bins):
        rows = df[df["bin"] == b]
        # A fixed random order per bin, taken as a prefix: a larger n keeps every pair a smaller n drew.
        order = np.random.default_rng([seed, b]).permutation(len(rows))[: int(quota[b])]
        parts.append(rows.iloc[order].assign(draw=np.arange(len(order))))
    out = pd.concat(parts) if parts else df.iloc[:0].assign(draw=0)
    # Round-robin over bins, so any prefix of the list is itself stratified (a stopped job stays balanced).
    return out.sort_values(["draw", "bin"], kind="stable").drop(columns="draw").reset_index(drop=True)


def parse_feature_spec(spec: str) -> tuple[str, int | None, str | None]:
    """'all' | 'sample:N' | 'pairs:OTHER_RUN:N' -> (kind, n, other run path)."""
    if spec == "all":
        return "all", None, None
    if spec.startswith("sample:"):
        n = spec.split(":", 1)[1]
        if n.isdigit() and int(n) > 0:
            return "sample", int(n), None
    if spec.startswith("pairs:"):
        other, _, n = spec[len("pairs:"):].rpartition(":")
        if other and n.isdigit() and int(n) > 0:
            return "pairs", int(n), other
    raise InputError(f"--features must be 'all', 'sample:N' or 'pairs:OTHER_RUN:N', got {spec!r}")


# --------------------------------------------------------------------------- LLM judge

def judge_key(a: str, b: str, config: ExplainerConfig, messages: list[dict]) -> str:
    return content_key("judge", JUDGE_VERSION, config.model, config.base_url.rstrip("/"), config.temperature,
                       config.max_tokens, messages)


def judge_similarity(pairs: Sequence[tuple[str, str]], client, config: ExplainerConfig,
                     cache: AnswerCache | None = None, progress: Progress | None = None) -> list[int | None]:
    """An LLM judge's 1-10 similarity score for each pair of explanations (None where it gave no number)."""
    cache = cache if cache is not None else AnswerCache()
    jobs = []
    for a, b in pairs:
        messages = judge_messages(a, b)
        jobs.append(Job((a, b), messages, judge_key(a, b, config, messages), parse_judge_score, "no score 1-10"))
    answers = run_jobs(jobs, client, config, cache, False, progress, None, "pair")
    return [int(a.value) if a.ok else None for a in answers]
