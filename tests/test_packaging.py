"""saecore installs as a package: importable and runnable from any folder, shipping only the library."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_elsewhere(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the venv's python in `cwd` without PYTHONPATH, so only the installed package can be found."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_import_from_another_folder_finds_the_repository_package(tmp_path):
    out = run_elsewhere(["-c", "import saecore, sys; print(saecore.__file__)"], tmp_path)
    assert out.returncode == 0, out.stderr
    found = Path(out.stdout.strip()).resolve()
    assert found.is_relative_to(ROOT / "saecore") and found.name == "__init__.py"


def test_command_line_help_runs_from_another_folder(tmp_path):
    out = run_elsewhere(["-m", "saecore", "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "info" in out.stdout


def test_info_runs_from_another_folder(tmp_path, tmp_path_factory):
    from workspaces import make_workspace

    ws = make_workspace(tmp_path_factory.mktemp("ws"), seeds=2)
    out = run_elsewhere(["-m", "saecore", "info", str(ws)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "4 runs in 2 families" in out.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written into the working folder


def test_only_the_library_is_packaged():
    cfg = pyproject()
    include = cfg["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["saecore*"]
    from setuptools import find_packages

    packages = find_packages(str(ROOT), include=include)
    assert "saecore" in packages and "saecore.loaders" in packages and "saecore.commands" in packages
    assert not {p.split(".")[0] for p in packages} & {"tests", "pages", "dashboard", "benchmarks", "data"}


def test_console_script_resolves_to_a_callable():
    scripts = pyproject()["project"]["scripts"]
    module, _, attr = scripts["saecore"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_torch_is_required_without_a_pin():
    deps = pyproject()["project"]["dependencies"]
    assert "torch" in deps  # a bare requirement: the preinstalled torch satisfies it
    assert pyproject()["project"]["requires-python"] == ">=3.11"
