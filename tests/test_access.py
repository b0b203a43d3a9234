"""Workspace access: only folders inside the configured roots open; escapes by `..` or symlink are refused."""

from __future__ import annotations

import os

import pytest

from saecore.access import AccessError, check_inside, parse_roots, resolve_inside, resolve_workspace


def test_relative_path_inside_root_resolves(tmp_path):
    (tmp_path / "data" / "demo").mkdir(parents=True)
    roots = parse_roots([], tmp_path)
    assert resolve_workspace("data/demo", roots, tmp_path) == (tmp_path / "data" / "demo").resolve()


def test_dotdot_escape_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret").mkdir()
    with pytest.raises(AccessError, match="outside the allowed workspace roots"):
        resolve_workspace("data/../secret", parse_roots([], tmp_path), tmp_path)


def test_symlink_out_of_root_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "data" / "link")
    with pytest.raises(AccessError, match="outside the allowed"):
        resolve_workspace("data/link", parse_roots([], tmp_path), tmp_path)


def test_launch_root_is_allowed(tmp_path):
    extra = tmp_path / "elsewhere" / "runs"
    extra.mkdir(parents=True)
    roots = parse_roots(["--root", str(tmp_path / "elsewhere")], tmp_path)
    assert resolve_workspace(str(extra), roots, tmp_path) == extra.resolve()


def test_missing_folder_is_reported(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(AccessError, match="no such file or folder"):
        resolve_workspace("data/nope", parse_roots([], tmp_path), tmp_path)


def test_empty_path_is_refused(tmp_path):
    with pytest.raises(AccessError, match="no workspace path"):
        resolve_workspace("  ", parse_roots([], tmp_path), tmp_path)


def test_run_file_linking_outside_is_refused(tmp_path):
    run = tmp_path / "data" / "run"
    run.mkdir(parents=True)
    (tmp_path / "weights").write_bytes(b"x")
    os.symlink(tmp_path / "weights", run / "sae_weights.safetensors")
    with pytest.raises(AccessError, match="points outside the workspace"):
        check_inside(run, tmp_path / "data")


def test_file_inside_root_resolves_but_is_not_a_workspace(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("feature,explanation")
    roots = parse_roots([], tmp_path)
    assert resolve_inside("data/x.csv", roots, tmp_path).name == "x.csv"
    with pytest.raises(AccessError, match="not a folder"):
        resolve_workspace("data/x.csv", roots, tmp_path)
