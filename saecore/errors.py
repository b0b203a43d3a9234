"""Exceptions raised by saecore; each names the file or argument and the problem."""

from __future__ import annotations

from pathlib import Path


class SaecoreError(Exception):
    """Base class for every error saecore raises on purpose."""


class LoadError(SaecoreError, ValueError):
    """A run could not be read: the message names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class InputError(SaecoreError, ValueError):
    """Inputs that are readable but cannot be combined (e.g. different d_in)."""
